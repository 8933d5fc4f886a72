"""Batch jobs in the store: the record a client polls, the chunks workers lease, the results.

The store, not the queue, is the truth. A queue message only says "chunk N of job J may need
work"; a worker must first *claim* the chunk (a conditional update: one winner), and writes its
results, marks it done and counts them in one transaction that checks the claim is still its
own. So a message delivered twice, a worker killed mid-chunk and re-leased work all end with
exactly one result row per image.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ai_photo_detector.ids import new_id
from ai_photo_detector.persistence.schema import Job, JobChunk, JobResult
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.persistence.store import aware as store_aware

QUEUED, RUNNING, DONE, CANCELLED = "queued", "running", "done", "cancelled"
ACTIVE = (QUEUED, RUNNING)
PENDING, DELIVERED, GAVE_UP = "pending", "delivered", "failed"  # a job's webhook event
WORKER_LOST = "worker_lost"  # the error code of images whose chunk ran out of attempts


@dataclass(frozen=True)
class Item:
    """One image of a job: its number, its name (archive member or path) and, inside a tar
    archive, where its bytes lie."""

    number: int
    name: str
    offset: int = -1
    size: int = -1

    def row(self) -> list[Any]:
        return [self.number, self.name, self.offset, self.size]

    @classmethod
    def of(cls, row: Sequence[Any]) -> Item:
        return cls(int(row[0]), str(row[1]), int(row[2]), int(row[3]))


@dataclass(frozen=True)
class NewJob:
    owner: str
    idempotency_key: str | None
    request_sha256: str
    source: str
    spool: str | None
    model_name: str
    callback_url: str | None = None


@dataclass(frozen=True)
class Claim:
    job_id: str
    index: int
    token: str
    items: list[Item]
    source: str
    spool: str | None
    model_name: str
    exhausted: bool  # tried max_attempts times already: answer its images with an error


def _held(claim: Claim) -> tuple[Any, ...]:
    """The chunk as this claim took it: still running under the same token."""
    return (
        JobChunk.job_id == claim.job_id,
        JobChunk.index == claim.index,
        JobChunk.claim == claim.token,
        JobChunk.status == RUNNING,
    )


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else store_aware(moment)


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different request."""


def owe_callback(session: Session, job_id: str) -> None:
    """In the transaction that ends a job: its webhook event, if it has one, is now owed."""
    session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.not_in(ACTIVE),
            Job.callback_url.is_not(None),
            Job.callback_status.is_(None),
        )
        .values(callback_status=PENDING, callback_next_at=now())
    )


class JobStore:
    def __init__(self, store: Store, region: str | None = None) -> None:
        self.store = store
        self.region = region  # tags the ids of the jobs made here

    def create(
        self, new: NewJob, items: Sequence[Item], chunk_size: int, lease_s: float
    ) -> tuple[Job, bool]:
        """The job and whether it is new; a repeated idempotency key returns the first job."""
        if new.idempotency_key is not None:
            existing = self.find_idempotent(new.owner, new.idempotency_key, new.request_sha256)
            if existing is not None:
                return existing, False
        created = now()
        job = Job(
            id=new_id(self.region),
            owner=new.owner,
            idempotency_key=new.idempotency_key,
            request_sha256=new.request_sha256,
            status=QUEUED,
            source=new.source,
            spool=new.spool,
            model_name=new.model_name,
            callback_url=new.callback_url,
            total=len(items),
            done=0,
            failed=0,
            chunks=(len(items) + chunk_size - 1) // chunk_size,
            chunks_done=0,
            created_at=created,
        )
        lease = created + timedelta(seconds=lease_s)
        chunks = [
            {
                "job_id": job.id,
                "index": i,
                "items": [item.row() for item in items[start : start + chunk_size]],
                "status": QUEUED,
                "claim": None,
                "attempts": 0,
                "lease_until": lease,
            }
            for i, start in enumerate(range(0, len(items), chunk_size))
        ]
        try:
            with self.store.session() as session, session.begin():
                session.add(job)
                session.flush()
                session.execute(insert(JobChunk), chunks)
        except IntegrityError:  # the same key, sent twice at once: the other one won
            if new.idempotency_key is None:
                raise
            existing = self.find_idempotent(new.owner, new.idempotency_key, new.request_sha256)
            if existing is None:
                raise
            return existing, False
        return job, True

    def find_idempotent(self, owner: str, key: str, request_sha256: str) -> Job | None:
        with self.store.session() as session:
            job = session.scalars(
                select(Job).where(Job.owner == owner, Job.idempotency_key == key)
            ).first()
        if job is not None and job.request_sha256 != request_sha256:
            raise IdempotencyConflict(key)
        return job

    def active_load(self, owner: str) -> tuple[int, int]:
        """Queued or running jobs of one owner, and their images."""
        with self.store.session() as session:
            count, images = session.execute(
                select(func.count(), func.coalesce(func.sum(Job.total), 0)).where(
                    Job.owner == owner, Job.status.in_(ACTIVE)
                )
            ).one()
        return int(count), int(images)

    def get(self, job_id: str) -> Job | None:
        with self.store.session() as session:
            return session.get(Job, job_id)

    def newest(self, owner: str | None, limit: int) -> list[Job]:
        """Newest first; every owner's when ``owner`` is None."""
        query = select(Job).order_by(Job.created_at.desc()).limit(limit)
        if owner is not None:
            query = query.where(Job.owner == owner)
        with self.store.session() as session:
            return list(session.scalars(query))

    def chunk_indices(self, job_id: str) -> list[int]:
        with self.store.session() as session:
            return list(
                session.scalars(
                    select(JobChunk.index)
                    .where(JobChunk.job_id == job_id, JobChunk.status != DONE)
                    .order_by(JobChunk.index)
                )
            )

    def cancel(self, job_id: str) -> bool:
        """True if the job was still queued or running."""
        with self.store.session() as session, session.begin():
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_(ACTIVE))
                .values(status=CANCELLED, finished_at=now())
            )
            owe_callback(session, job_id)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def claim(self, job_id: str, index: int, lease_s: float, max_attempts: int) -> Claim | None:
        """Take a chunk for ``lease_s`` seconds, unless it is done, its job is over, or another
        worker holds a live lease on it."""
        token = uuid.uuid4().hex
        moment = now()
        active_job = select(Job.id).where(Job.id == job_id, Job.status.in_(ACTIVE))
        with self.store.session() as session, session.begin():
            result = session.execute(
                update(JobChunk)
                .where(
                    JobChunk.job_id == job_id,
                    JobChunk.index == index,
                    JobChunk.job_id.in_(active_job),
                    or_(
                        JobChunk.status == QUEUED,
                        and_(JobChunk.status == RUNNING, JobChunk.lease_until < moment),
                    ),
                )
                .values(
                    status=RUNNING,
                    claim=token,
                    attempts=JobChunk.attempts + 1,
                    lease_until=moment + timedelta(seconds=lease_s),
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == QUEUED)
                .values(status=RUNNING, started_at=moment)
            )
            chunk = session.get(JobChunk, (job_id, index))
            job = session.get(Job, job_id)
            assert chunk is not None and job is not None  # the update above matched them
            return Claim(
                job_id=job_id,
                index=index,
                token=token,
                items=[Item.of(row) for row in chunk.items],
                source=job.source,
                spool=job.spool,
                model_name=job.model_name,
                exhausted=chunk.attempts > max_attempts,
            )

    def renew(self, claim: Claim, lease_s: float) -> bool:
        """Extend a held lease; False once the chunk is no longer this claim's."""
        with self.store.session() as session, session.begin():
            result = session.execute(
                update(JobChunk)
                .where(*_held(claim))
                .values(lease_until=now() + timedelta(seconds=lease_s))
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def release(self, claim: Claim, lease_s: float) -> bool:
        """Give a held chunk back unworked (this worker cannot do it); the reaper hands it out
        again after ``lease_s`` if no message does sooner."""
        with self.store.session() as session, session.begin():
            result = session.execute(
                update(JobChunk)
                .where(*_held(claim))
                .values(status=QUEUED, claim=None, lease_until=now() + timedelta(seconds=lease_s))
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def complete(self, claim: Claim, rows: list[dict[str, Any]]) -> Job | None:
        """Write a chunk's rows, mark it done and count them, all or nothing. None when the
        claim was lost meanwhile (another worker redoes the chunk, nothing is written twice);
        else the job as it stands afterwards."""
        finished = now()
        with self.store.session() as session, session.begin():
            result = session.execute(
                update(JobChunk).where(*_held(claim)).values(status=DONE, claim=None)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            if rows:
                session.execute(insert(JobResult), [{"job_id": claim.job_id, **r} for r in rows])
            failed = sum(1 for r in rows if r.get("error_code"))
            session.execute(
                update(Job)
                .where(Job.id == claim.job_id)
                .values(
                    done=Job.done + len(rows) - failed,
                    failed=Job.failed + failed,
                    chunks_done=Job.chunks_done + 1,
                )
            )
            session.execute(
                update(Job)
                .where(
                    Job.id == claim.job_id,
                    Job.status == RUNNING,
                    Job.chunks_done >= Job.chunks,
                )
                .values(status=DONE, finished_at=finished)
            )
            owe_callback(session, claim.job_id)
            job = session.get(Job, claim.job_id)
            if job is not None:
                session.refresh(job)
            return job

    def expired(self, lease_s: float, include_queued: bool) -> list[tuple[str, int]]:
        """Chunks of live jobs whose worker went silent (and, with ``include_queued``, queued
        chunks whose message may have been lost), each leased afresh and handed back once."""
        moment = now()
        states = ACTIVE if include_queued else (RUNNING,)
        active_jobs = select(Job.id).where(Job.status.in_(ACTIVE))
        with self.store.session() as session:
            stale = session.execute(
                select(JobChunk.job_id, JobChunk.index).where(
                    JobChunk.status.in_(states),
                    JobChunk.lease_until < moment,
                    JobChunk.job_id.in_(active_jobs),
                )
            ).all()
        revived: list[tuple[str, int]] = []
        for job_id, index in stale:
            with self.store.session() as session, session.begin():
                result = session.execute(
                    update(JobChunk)
                    .where(
                        JobChunk.job_id == job_id,
                        JobChunk.index == index,
                        JobChunk.status.in_(states),
                        JobChunk.lease_until < moment,
                    )
                    .values(
                        status=QUEUED, claim=None, lease_until=moment + timedelta(seconds=lease_s)
                    )
                )
            if result.rowcount:  # type: ignore[attr-defined]
                revived.append((job_id, index))
        return revived

    def results(self, job_id: str, after: int, limit: int) -> list[JobResult]:
        """Result rows in item order, ``limit`` at a time after item ``after``."""
        with self.store.session() as session:
            return list(
                session.scalars(
                    select(JobResult)
                    .where(JobResult.job_id == job_id, JobResult.item > after)
                    .order_by(JobResult.item)
                    .limit(limit)
                )
            )

    def counts(self) -> dict[str, int]:
        """Jobs per status, chunks waiting and images processed in live jobs, for metrics."""
        with self.store.session() as session:
            by_status = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
            waiting = session.scalar(
                select(func.count()).select_from(JobChunk).where(JobChunk.status == QUEUED)
            )
            processed = session.scalar(
                select(func.coalesce(func.sum(Job.done + Job.failed), 0)).where(
                    Job.status.in_(ACTIVE)
                )
            )
        counts = {str(k): int(v) for k, v in by_status.items()}
        return {
            **counts,
            "chunks_queued": int(waiting or 0),
            "active_processed": int(processed or 0),
        }

    def finished_before(self, cutoff: datetime) -> list[Job]:
        with self.store.session() as session:
            return list(
                session.scalars(
                    select(Job).where(Job.status.not_in(ACTIVE), Job.finished_at < cutoff)
                )
            )

    def delete(self, job_id: str) -> None:
        with self.store.session() as session, session.begin():
            for table in (JobResult, JobChunk):
                session.query(table).filter(table.job_id == job_id).delete()
            session.query(Job).filter(Job.id == job_id).delete()

    def forget_spool(self, job_id: str) -> None:
        with self.store.session() as session, session.begin():
            session.execute(update(Job).where(Job.id == job_id).values(spool=None))
