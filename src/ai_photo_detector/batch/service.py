"""Jobs as the API sees them, free of HTTP: submit (archive or manifest), look up with
ownership, cancel, page through results, purge what retention lets go."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ai_photo_detector.batch.archives import ArchiveLimits, open_archive
from ai_photo_detector.batch.callback_targets import refused
from ai_photo_detector.batch.callbacks import Webhooks
from ai_photo_detector.batch.manifests import StorageRoots
from ai_photo_detector.batch.queue import JobQueue
from ai_photo_detector.batch.scoring import RESULT_FIELDS
from ai_photo_detector.contract.schemas import CallbackAttemptOut, CallbackOut, JobLinks, JobStatus
from ai_photo_detector.errors import JobConflict, JobLimitReached, JobNotFound
from ai_photo_detector.persistence.callbacks import Attempt
from ai_photo_detector.persistence.jobs import (
    ACTIVE,
    IdempotencyConflict,
    Item,
    JobStore,
    NewJob,
    aware,
    now,
)
from ai_photo_detector.persistence.schema import Job
from ai_photo_detector.settings import JobsSettings

logger = logging.getLogger(__name__)
RESULTS_PAGE = 1000


@dataclass(frozen=True)
class Submitter:
    owner: str  # the API key's id; "" for an anonymous caller
    admin: bool


@dataclass(frozen=True)
class Submission:
    submitter: Submitter
    idempotency_key: str | None
    request_sha256: str
    model_name: str
    callback_url: str | None = None


class JobService:
    def __init__(
        self,
        jobs: JobStore,
        queue: JobQueue,
        settings: JobsSettings,
        extensions: list[str],
        max_image_bytes: int,
        webhooks: Webhooks | None = None,
    ) -> None:
        self.jobs = jobs
        self.webhooks = webhooks
        self.queue = queue
        self.settings = settings
        self.roots = StorageRoots(settings.storage_roots)
        self.spool_dir = Path(settings.spool_dir)
        self.archive_limits = ArchiveLimits(
            max_images=settings.max_images_per_job,
            max_member_bytes=max_image_bytes,
            max_expanded_bytes=settings.max_expanded_bytes,
            max_ratio=settings.max_compression_ratio,
            extensions=frozenset(e.lower() for e in extensions),
        )

    # --- submission ------------------------------------------------------------------------

    def new_spool_path(self) -> Path:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        return self.spool_dir / f"{uuid.uuid4().hex}.upload"

    def _replay(self, submission: Submission) -> Job | None:
        if submission.idempotency_key is None:
            return None
        try:
            return self.jobs.find_idempotent(
                submission.submitter.owner, submission.idempotency_key, submission.request_sha256
            )
        except IdempotencyConflict as exc:
            raise JobConflict(
                f"the idempotency key {submission.idempotency_key!r} was used for another request",
                "idempotency_key_reused",
            ) from exc

    def _check_quota(self, owner: str, images: int) -> None:
        jobs, active_images = self.jobs.active_load(owner)
        settings = self.settings
        if jobs >= settings.max_active_jobs_per_key:
            raise JobLimitReached(
                f"{jobs} jobs are queued or running for this key; at most "
                f"{settings.max_active_jobs_per_key}"
            )
        if active_images + images > settings.max_active_images_per_key:
            raise JobLimitReached(
                f"this key's queued and running jobs would hold {active_images + images} images; "
                f"at most {settings.max_active_images_per_key}"
            )

    def _create(
        self,
        submission: Submission,
        callback_url: str | None,
        source: str,
        spool: Path | None,
        items: list[Item],
    ) -> tuple[Job, bool]:
        self._check_quota(submission.submitter.owner, len(items))
        new = NewJob(
            callback_url=callback_url,
            owner=submission.submitter.owner,
            idempotency_key=submission.idempotency_key,
            request_sha256=submission.request_sha256,
            source=source,
            spool=str(spool) if spool is not None else None,
            model_name=submission.model_name,
        )
        job, created = self.jobs.create(new, items, self.settings.chunk_size, self.settings.lease_s)
        if created:
            for index in range(job.chunks):
                self.queue.enqueue(job.id, index)
        return job, created

    def callback_of(self, submission: Submission) -> str | None:
        """The submission's callback URL once checked (``callback_refused`` otherwise)."""
        if submission.callback_url is None:
            return None
        if self.webhooks is None:
            raise refused("webhooks are turned off on this server (webhooks.enabled)")
        return self.webhooks.accept(submission.callback_url, submission.submitter.owner)

    def submit_archive(self, submission: Submission, upload: Path) -> tuple[Job, bool]:
        """Check the spooled upload and queue its images; the upload is removed on refusal
        and on a replay (the first submission's copy is the one worked on)."""
        try:
            replay = self._replay(submission)
            if replay is not None:
                upload.unlink(missing_ok=True)
                return replay, False
            callback_url = self.callback_of(submission)  # refused before the archive is read
            kind, path, items = open_archive(upload, self.archive_limits)
            job, created = self._create(submission, callback_url, kind, path, items)
        except BaseException:
            upload.unlink(missing_ok=True)
            upload.with_suffix(".tar").unlink(missing_ok=True)
            raise
        if not created:  # a concurrent twin won the race
            path.unlink(missing_ok=True)
        return job, created

    def submit_manifest(self, submission: Submission, paths: list[str]) -> tuple[Job, bool]:
        replay = self._replay(submission)
        if replay is not None:
            return replay, False
        callback_url = self.callback_of(submission)  # refused before the paths are checked
        items = [Item(i, self.roots.check(path)) for i, path in enumerate(paths)]
        return self._create(submission, callback_url, "manifest", None, items)

    # --- reading ---------------------------------------------------------------------------

    def get(self, job_id: str, submitter: Submitter) -> Job:
        """The job, if this caller may see it (another key's job does not exist for it)."""
        job = self.jobs.get(job_id[:64])
        if job is None or (not submitter.admin and job.owner != submitter.owner):
            raise JobNotFound(f"no job {job_id!r}")
        return job

    def newest(self, submitter: Submitter, limit: int) -> list[Job]:
        return self.jobs.newest(None if submitter.admin else submitter.owner, limit)

    def cancel(self, job_id: str, submitter: Submitter) -> Job:
        job = self.get(job_id, submitter)
        if job.status not in ACTIVE or not self.jobs.cancel(job.id):
            raise JobConflict(f"job {job.id} is already {job.status}", "job_finished")
        if job.spool:
            Path(job.spool).unlink(missing_ok=True)
            self.jobs.forget_spool(job.id)
        return self.get(job.id, submitter)

    def result_pages(self, job_id: str) -> Iterator[list[dict[str, Any]]]:
        after = -1
        while True:
            page = self.jobs.results(job_id, after, RESULTS_PAGE)
            if not page:
                return
            yield [{name: getattr(row, name) for name in RESULT_FIELDS} for row in page]
            after = page[-1].item

    def status(self, job: Job) -> JobStatus:
        """The job as the API shows it, its webhook's attempts included."""
        attempts = []
        if job.callback_url is not None and self.webhooks is not None:
            attempts = self.webhooks.store.attempts(job.id)
        return job_status(job, attempts)

    def deliver_webhooks(self) -> int:
        if self.webhooks is None:
            return 0
        return self.webhooks.deliver_due(self.status)

    def purge(self) -> int:
        """Forget finished jobs past retention, and their archives; returns how many."""
        cutoff = now() - timedelta(days=self.settings.retention_days)
        old = self.jobs.finished_before(cutoff)
        for job in old:
            if job.spool:
                Path(job.spool).unlink(missing_ok=True)
            self.jobs.delete(job.id)
        return len(old)


def _iso(moment: datetime | None) -> str | None:
    moment = aware(moment)
    return moment.isoformat() if moment is not None else None


def _callback(job: Job, attempts: list[Attempt]) -> CallbackOut | None:
    if job.callback_url is None:
        return None
    return CallbackOut(
        url=job.callback_url,
        status=job.callback_status or "waiting",
        attempts=[
            CallbackAttemptOut(
                number=a.number,
                at=_iso(a.at) or "",
                status_code=a.status_code,
                error=a.error,
                duration_ms=round(a.duration_ms, 1),
            )
            for a in attempts
        ],
    )


def job_status(job: Job, attempts: list[Attempt]) -> JobStatus:
    return JobStatus(
        id=job.id,
        status=job.status,
        source=job.source,
        model=job.model_name,
        total=job.total,
        done=job.done,
        failed=job.failed,
        created_at=_iso(job.created_at) or "",
        started_at=_iso(job.started_at),
        finished_at=_iso(job.finished_at),
        links=JobLinks(self=f"/v1/jobs/{job.id}", results=f"/v1/jobs/{job.id}/results"),
        callback=_callback(job, attempts),
        **progress(job),
    )


def progress(job: Job) -> dict[str, Any]:
    """Status fields derived from the counts: images per second since start, and an ETA."""
    started = aware(job.started_at)
    finished = aware(job.finished_at)
    processed = job.done + job.failed
    rate = None
    eta = None
    if started is not None:
        elapsed = ((finished or now()) - started).total_seconds()
        if elapsed > 0 and processed:
            rate = processed / elapsed
            if job.status in ACTIVE:
                eta = (job.total - processed) / rate
    return {"rate_per_s": rate, "eta_s": eta}
