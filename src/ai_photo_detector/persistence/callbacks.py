"""Webhook deliveries owed for finished jobs: which are due, who is sending one, and every
attempt, so a job's status shows what happened to its event.

A delivery is claimed by pushing its next attempt past a lease before sending, in one
conditional update: two replicas never send the same attempt, and a sender that dies leaves
the event due again once the lease runs out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from ai_photo_detector.persistence.jobs import DELIVERED, GAVE_UP, PENDING, aware, now
from ai_photo_detector.persistence.schema import CallbackAttempt, Job
from ai_photo_detector.persistence.store import Store


@dataclass(frozen=True)
class Attempt:
    number: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


class CallbackStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def due(self, limit: int) -> list[Job]:
        with self.store.session() as session:
            found = session.scalars(
                select(Job)
                .where(Job.callback_status == PENDING, Job.callback_next_at <= now())
                .order_by(Job.callback_next_at)
                .limit(limit)
            )
            return list(found)

    def claim(self, job_id: str, lease_s: float) -> bool:
        """Take a due delivery for ``lease_s`` seconds; False when another sender has it."""
        moment = now()
        with self.store.session() as session, session.begin():
            result = session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.callback_status == PENDING,
                    Job.callback_next_at <= moment,
                )
                .values(callback_next_at=moment + timedelta(seconds=lease_s))
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def record(
        self, job_id: str, attempt: Attempt, delivered: bool, retry_at: datetime | None
    ) -> None:
        """Keep the attempt; then delivered, due again at ``retry_at``, or given up (None)."""
        if delivered:
            status, next_at = DELIVERED, None
        elif retry_at is None:
            status, next_at = GAVE_UP, None
        else:
            status, next_at = PENDING, retry_at
        with self.store.session() as session, session.begin():
            session.execute(
                insert(CallbackAttempt).values(
                    job_id=job_id,
                    number=attempt.number,
                    at=attempt.at,
                    status_code=attempt.status_code,
                    error=attempt.error[:500] if attempt.error else None,
                    duration_ms=attempt.duration_ms,
                )
            )
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(callback_status=status, callback_next_at=next_at)
            )

    def attempts(self, job_id: str) -> list[Attempt]:
        with self.store.session() as session:
            rows = session.scalars(
                select(CallbackAttempt)
                .where(CallbackAttempt.job_id == job_id)
                .order_by(CallbackAttempt.number)
            )
            return [
                Attempt(r.number, aware(r.at) or r.at, r.status_code, r.error, r.duration_ms)
                for r in rows
            ]
