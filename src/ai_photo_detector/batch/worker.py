"""Working jobs off: a chunk runner (claim, score, write all or nothing) and the consumer
threads that feed it from the queue, with the reaper that revives chunks whose worker died.

They run in ``ai-photo-detector worker`` processes: the one the service starts beside itself
(the embedded default: ``make run`` works jobs off too) and any others.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ai_photo_detector.batch.archives import ArchiveReader
from ai_photo_detector.batch.manifests import StorageRoots, read_path
from ai_photo_detector.batch.metrics import JobMetrics
from ai_photo_detector.batch.queue import JobQueue
from ai_photo_detector.batch.scoring import error_row, score_items
from ai_photo_detector.errors import DetectorError, ModelNotFound
from ai_photo_detector.imaging import DecodeLimits
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.persistence.jobs import WORKER_LOST, Claim, Item, JobStore, aware
from ai_photo_detector.settings import JobsSettings

logger = logging.getLogger(__name__)

DetectorFor = Callable[[str], OnnxDetector]  # a job's model name -> a detector; or ModelNotFound
Reader = Callable[[Item], bytes]


class ChunkRunner:
    def __init__(
        self,
        jobs: JobStore,
        settings: JobsSettings,
        detector_for: DetectorFor,
        limits: DecodeLimits,
        max_image_bytes: int,
        metrics: JobMetrics | None = None,
    ) -> None:
        self.jobs = jobs
        self.settings = settings
        self.detector_for = detector_for
        self.limits = limits
        self.max_image_bytes = max_image_bytes
        self.roots = StorageRoots(settings.storage_roots)
        self.metrics = metrics
        self.queue_again: Callable[[str, int], None] = lambda job_id, index: None

    def feed_back_to(self, queue: JobQueue) -> None:
        """Where chunks this worker gives back are queued again."""
        self.queue_again = queue.enqueue

    @contextlib.contextmanager
    def _reader(self, claim: Claim) -> Iterator[Reader]:
        if claim.source == "manifest":
            yield lambda item: read_path(item.name, self.roots, self.max_image_bytes)
            return
        if claim.spool is None or not Path(claim.spool).is_file():
            raise DetectorError("the job's archive is gone", "archive_missing")
        with ArchiveReader(claim.source, Path(claim.spool), self.max_image_bytes) as archive:
            yield archive.read

    def _rows(self, claim: Claim, detector: OnnxDetector) -> list[dict[str, Any]]:
        last_renewal = [time.monotonic()]

        def renew() -> None:  # a long chunk keeps its lease while it makes progress
            if time.monotonic() - last_renewal[0] > self.settings.lease_s / 3:
                self.jobs.renew(claim, self.settings.lease_s)
                last_renewal[0] = time.monotonic()

        try:
            with self._reader(claim) as read:
                return score_items(detector, claim.items, read, self.limits, on_batch=renew)
        except DetectorError as exc:  # the whole chunk cannot be read or scored
            return [error_row(item, exc.code, exc.message) for item in claim.items]

    def run(self, job_id: str, index: int) -> bool:
        """Work one chunk off if it still needs it; True if this call wrote its results."""
        claim = self.jobs.claim(job_id, index, self.settings.lease_s, self.settings.max_attempts)
        if claim is None:
            return False
        started = time.perf_counter()
        if claim.exhausted:
            code = WORKER_LOST
            message = f"no worker finished its chunk in {self.settings.max_attempts} attempts"
            try:
                self.detector_for(claim.model_name)
            except ModelNotFound as exc:  # given back each time: say why
                code, message = exc.code, f"no worker holds the job's model: {exc.message}"
            rows = [error_row(item, code, message) for item in claim.items]
        else:
            try:
                detector = self.detector_for(claim.model_name)
            except ModelNotFound:  # another worker may hold it: give the chunk back
                self.jobs.release(claim, self.settings.lease_s)
                self.queue_again(job_id, index)
                return False
            rows = self._rows(claim, detector)
        job = self.jobs.complete(claim, rows)
        if job is None:
            logger.warning("chunk %s/%s was re-leased meanwhile; results dropped", job_id, index)
            return False
        if self.metrics is not None:
            self.metrics.chunk_seconds.observe(time.perf_counter() - started)
            failed = sum(1 for row in rows if row.get("error_code"))
            self.metrics.images.labels("ok").inc(len(rows) - failed)
            self.metrics.images.labels("failed").inc(failed)
            if claim.exhausted:
                self.metrics.chunk_failures.labels("abandoned").inc()
        if job.status != "running" and job.spool and job.chunks_done >= job.chunks:
            Path(job.spool).unlink(missing_ok=True)  # the last chunk: the archive is spent
            self.jobs.forget_spool(job.id)
            if self.metrics is not None and job.finished_at is not None:
                created = aware(job.created_at)
                finished = aware(job.finished_at)
                if created is not None and finished is not None:
                    self.metrics.job_seconds.observe((finished - created).total_seconds())
        return True


class Consumer:
    """Threads that take chunk messages off the queue and run them, and a reaper."""

    def __init__(
        self,
        queue: JobQueue,
        runner: ChunkRunner,
        threads: int,
        poll_s: float = 0.2,
    ) -> None:
        self.queue = queue
        self.runner = runner
        self.count = threads
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        runner.feed_back_to(queue)

    def start(self) -> None:
        for i in range(self.count):
            thread = threading.Thread(target=self._work, name=f"job-worker-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)
        reaper = threading.Thread(target=self._reap, name="job-reaper", daemon=True)
        reaper.start()
        self.threads.append(reaper)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages; a chunk in progress finishes (or its lease lapses)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                message = self.queue.next()
            except Exception:  # the queue's store is down: wait and try again
                logger.exception("reading the job queue failed")
                self.stopping.wait(self.poll_s * 10)
                continue
            if message is None:
                self.stopping.wait(self.poll_s)
                continue
            try:
                self.runner.run(*message)
            except Exception:  # the chunk's lease lapses and the reaper hands it out again
                logger.exception("chunk %s/%s failed", *message)
                if self.runner.metrics is not None:
                    self.runner.metrics.chunk_failures.labels("raised").inc()

    def _reap(self) -> None:
        settings = self.runner.settings
        while not self.stopping.wait(settings.reap_interval_s):
            try:
                # Queued chunks count as lost only when the queue is empty: a long queue is
                # not a lost message.
                revived = self.runner.jobs.expired(settings.lease_s, self.queue.pending() == 0)
                for job_id, index in revived:
                    self.queue.enqueue(job_id, index)
                if revived and self.runner.metrics is not None:
                    self.runner.metrics.chunks_revived.inc(len(revived))
            except Exception:
                logger.exception("reviving stalled chunks failed")


def worker_threads(settings: JobsSettings) -> int:
    from ai_photo_detector.model.runtimes import available_cpus

    return settings.threads or available_cpus()
