"""Prometheus metrics of batch jobs, in the registry of the process that works them (the
service's, or the worker's own endpoint)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from ai_photo_detector.persistence.jobs import JobStore

CHUNK_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
JOB_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.images = Counter(
            "apd_job_images_total",
            "Job images scored (ok) or answered with an error (failed).",
            ["outcome"],
            registry=registry,
        )
        self.chunk_seconds = Histogram(
            "apd_job_chunk_seconds",
            "Time to work off one chunk.",
            buckets=CHUNK_BUCKETS,
            registry=registry,
        )
        self.job_seconds = Histogram(
            "apd_job_seconds",
            "Submission to last result of a job.",
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.chunks_revived = Counter(
            "apd_job_chunks_revived_total",
            "Chunks handed to another worker after theirs went silent (or its message was lost).",
            registry=registry,
        )
        self.chunk_failures = Counter(
            "apd_job_chunk_failures_total",
            "Chunks whose worker raised (retried after their lease) or ran out of attempts.",
            ["kind"],
            registry=registry,
        )


class JobStoreCollector:
    """Jobs per status and chunks waiting, read from the store at scrape time (so every
    replica and worker reports the same shared truth)."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        counts = self.jobs.counts()
        depth = GaugeMetricFamily("apd_job_queue_depth", "Chunks waiting for a worker.")
        depth.add_metric([], counts.pop("chunks_queued", 0))
        yield depth
        processed = GaugeMetricFamily(
            "apd_job_active_images_processed",
            "Images scored or failed so far in queued and running jobs (flat while work stalls).",
        )
        processed.add_metric([], counts.pop("active_processed", 0))
        yield processed
        jobs = GaugeMetricFamily("apd_jobs", "Jobs by status.", labels=["status"])
        for status in ("queued", "running", "done", "cancelled"):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
