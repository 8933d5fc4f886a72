"""Prometheus metrics of the service, held in a registry owned by the app (no globals).

Route labels are route templates (``/v1/models/{name}``), never raw paths, so label
cardinality stays bounded whatever clients send. One process per container: scale with
replicas, each scraped on its own (see README "Metrics").
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PHASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "apd_http_requests_total", "HTTP requests.", ["method", "route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "apd_http_request_duration_seconds",
            "HTTP request duration.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("apd_http_requests_in_flight", "Requests being served.", registry=r)
        self.queue_seconds = Histogram(
            "apd_queue_seconds",
            "Time waiting for a micro-batch.",
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.preprocess_seconds = Histogram(
            "apd_preprocess_seconds",
            "Decode and preprocess time.",
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "apd_inference_seconds",
            "Model inference time per batch.",
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "apd_batch_size",
            "Images per inference call.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.predictions = Counter(
            "apd_predictions_total",
            "Predictions by model version, label and band.",
            ["model", "version", "label", "band"],
            registry=r,
        )
        self.score = Histogram(
            "apd_prediction_score",
            "Calibrated AI probability.",
            ["model"],
            buckets=tuple(i / 20 for i in range(1, 21)),
            registry=r,
        )
        self.image_bytes = Histogram(
            "apd_image_bytes",
            "Uploaded image size in bytes.",
            buckets=(1e4, 5e4, 1e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7),
            registry=r,
        )
        self.image_pixels = Histogram(
            "apd_image_pixels",
            "Uploaded image width*height.",
            buckets=(1e4, 1e5, 2.5e5, 1e6, 3e6, 1e7, 2.5e7, 5e7),
            registry=r,
        )
        self.input_errors = Counter(
            "apd_input_errors_total", "Refused inputs by error code.", ["code"], registry=r
        )
        self.rate_limited = Counter(
            "apd_rate_limited_total", "Requests refused by rate limits.", registry=r
        )
        self.overloaded = Counter(
            "apd_overloaded_total", "Requests refused because the queue was full.", registry=r
        )
        self.queue_depth = Gauge(
            "apd_queue_depth", "Images waiting for inference.", ["model"], registry=r
        )
        self.model_info = Info("apd_model", "Loaded model.", ["model"], registry=r)
        self.model_ready = Gauge(
            "apd_model_ready", "1 when the model is loaded and warmed up.", ["model"], registry=r
        )
