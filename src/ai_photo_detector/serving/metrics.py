"""Prometheus metrics of the service, held in a registry owned by the app (no globals).

Route labels are route templates (``/v1/models/{name}``), never raw paths, so label
cardinality stays bounded whatever clients send. One process per container: scale with
replicas, each scraped on its own (see README "Metrics").
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ai_photo_detector.persistence.predictions import PredictionLog

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
        self.rate_limit_storage_errors = Counter(
            "apd_rate_limit_storage_errors_total",
            "Rate-limit storage (Redis) failures; rate_limit.on_storage_error decides what then.",
            registry=r,
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
        self.model_info = Info("apd_model", "Loaded model.", ["role", "model"], registry=r)
        window = ["model", "version", "window"]
        self.drift_detected = Gauge(
            "apd_drift_detected", "1 when the last drift check found drift.", window, registry=r
        )
        self.drift_severity = Gauge(
            "apd_drift_severity",
            "Last drift severity: 0 none, 1 warning, 2 critical.",
            window,
            registry=r,
        )
        self.drift_window_size = Gauge(
            "apd_drift_window_size", "Predictions in the last drift window.", window, registry=r
        )
        self.drift_p_value = Gauge(
            "apd_drift_p_value",
            "p-value per drift detector family.",
            [*window, "detector"],
            registry=r,
        )
        self.drift_statistic = Gauge(
            "apd_drift_statistic",
            "Effect sizes each drift detector reports (score psi and wasserstein, embedding "
            "mmd2, image_stats <statistic>_p_adjusted, labels chi2, ...).",
            [*window, "detector", "statistic"],
            registry=r,
        )
        self.drift_runs = Counter(
            "apd_drift_runs_total",
            "Drift checks by outcome.",
            ["model", "window", "severity"],
            registry=r,
        )
        version = ["model", "version"]
        self.live_accuracy = Gauge(
            "apd_live_accuracy", "Accuracy on reviewed predictions.", version, registry=r
        )
        self.live_precision = Gauge(
            "apd_live_precision",
            "Precision (AI positive) on reviewed predictions.",
            version,
            registry=r,
        )
        self.live_recall = Gauge(
            "apd_live_recall", "Recall (AI positive) on reviewed predictions.", version, registry=r
        )
        self.live_reviewed = Gauge(
            "apd_live_reviewed",
            "Reviewed predictions behind the live metrics.",
            version,
            registry=r,
        )
        self.feedback = Counter(
            "apd_feedback_total",
            "Reviewer verdicts by agreement.",
            ["source", "agreement"],
            registry=r,
        )
        self.alerts_received = Counter(
            "apd_alerts_received_total", "Alerts posted by Alertmanager.", ["status"], registry=r
        )
        self.shadow_pairs = Counter(
            "apd_shadow_pairs_total", "Champion/challenger pairs scored.", ["agreement"], registry=r
        )
        self.shadow_dropped = Counter(
            "apd_shadow_dropped_total", "Mirror requests dropped or failed.", registry=r
        )
        self.shadow_disagreement = Gauge(
            "apd_shadow_disagreement", "Label disagreement of recent pairs.", registry=r
        )
        self.shadow_correlation = Gauge(
            "apd_shadow_score_correlation", "Score correlation of recent pairs.", registry=r
        )
        self.canary_weight = Gauge(
            "apd_canary_weight", "Share of callers answered by the challenger.", registry=r
        )
        self.canary_rollbacks = Counter(
            "apd_canary_rollbacks_total", "Canaries stopped by the guard.", registry=r
        )
        self.reloads = Counter(
            "apd_model_reloads_total", "Model reloads by outcome.", ["outcome"], registry=r
        )
        self.model_ready = Gauge(
            "apd_model_ready",
            "1 when the model is loaded and warmed up.",
            ["role", "model"],
            registry=r,
        )


class PredictionLogCollector:
    """Reads the prediction log's own counters at scrape time (the log knows nothing of HTTP)."""

    def __init__(self, log: PredictionLog) -> None:
        self.log = log

    def collect(self) -> Iterator[Metric]:
        counters = self.log.counters
        yield CounterMetricFamily(
            "apd_prediction_log_written", "Predictions written to the store.", counters.written
        )
        yield CounterMetricFamily(
            "apd_prediction_log_dropped",
            "Predictions dropped: queue full, rows the database refused, or unwritten at stop.",
            counters.dropped,
        )
        yield CounterMetricFamily(
            "apd_prediction_log_retries",
            "Writes put off because the database was unreachable (rows kept, retried).",
            counters.retries,
        )
        yield CounterMetricFamily(
            "apd_prediction_log_replayed",
            "Rows an earlier process left in the durable spool, written at start.",
            counters.replayed,
        )
        yield CounterMetricFamily(
            "apd_prediction_log_errors", "Failed prediction-log writes.", counters.errors
        )
        yield GaugeMetricFamily(
            "apd_prediction_log_queue_depth", "Predictions waiting to be written.", self.log.depth
        )
