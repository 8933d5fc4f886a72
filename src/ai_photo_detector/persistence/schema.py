"""The store's tables (SQLAlchemy 2). Alembic migrations in ``migrations/`` create them."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    api_key_id: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(16))  # primary or shadow
    label: Mapped[str] = mapped_column(String(64))
    band: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[str] = mapped_column(String(64), default="")  # why uncertain, comma-joined
    score: Mapped[float] = mapped_column(Float)
    queue_ms: Mapped[float] = mapped_column(Float)
    preprocess_ms: Mapped[float] = mapped_column(Float)
    inference_ms: Mapped[float] = mapped_column(Float)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    bytes: Mapped[int] = mapped_column(Integer)
    brightness: Mapped[float] = mapped_column(Float)
    contrast: Mapped[float] = mapped_column(Float)
    saturation: Mapped[float] = mapped_column(Float)
    sharpness: Mapped[float] = mapped_column(Float)
    jpeg_quality: Mapped[float] = mapped_column(Float)
    embedding: Mapped[builtins.bytes] = mapped_column(LargeBinary)  # float16, little-endian
    image_path: Mapped[str | None] = mapped_column(String(512))
    paired_id: Mapped[str | None] = mapped_column(String(32), index=True)  # shadow -> primary
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what the metadata said
    # The model's own label where a policy (a decisive C2PA manifest) answered otherwise; rows
    # logged before it existed have none, and there the answer was the model's.
    model_label: Mapped[str | None] = mapped_column(String(64))

    @hybrid_property
    def own_label(self) -> str:
        """What the model said: live accuracy and shadow comparisons judge this, not the
        policy's answer."""
        return self.model_label or self.label

    @own_label.inplace.expression
    @classmethod
    def _own_label_expression(cls) -> Any:
        return func.coalesce(cls.model_label, cls.label)

    __table_args__ = (
        Index("ix_predictions_model_time", "model_name", "model_version", "created_at"),
        Index("ix_predictions_route_band_time", "route", "band", "created_at"),
    )


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    __table_args__ = (UniqueConstraint("prediction_id", "source", name="uq_feedback_source"),)


class ReviewClaim(Base):
    """A reviewer's lease on a queued prediction: nobody else gets it until it expires."""

    __tablename__ = "review_claims"

    prediction_id: Mapped[str] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True
    )
    reviewer: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ReviewSkip(Base):
    """A reviewer passed on a prediction: the queue does not offer it to them again."""

    __tablename__ = "review_skips"

    prediction_id: Mapped[str] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True
    )
    reviewer: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DriftReport(Base):
    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    window: Mapped[str] = mapped_column(String(32))  # e.g. "count:500" or "time:3600"
    size: Mapped[int] = mapped_column(Integer)
    drift: Mapped[bool] = mapped_column(Boolean)
    severity: Mapped[str] = mapped_column(String(16))  # none, warning, critical
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    status: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[str] = mapped_column(String(64))
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON)


class RegistryEvent(Base):
    """Audit log of registry changes: who did what, when and why."""

    __tablename__ = "registry_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    action: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(64))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(1000))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class Job(Base):
    """A batch of images scored off the request path, owned by the API key that sent it."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)  # key id; "" when anonymous
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_sha256: Mapped[str] = mapped_column(String(64))  # a reused key must resend this
    status: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[str] = mapped_column(String(16))  # zip, tar or manifest
    spool: Mapped[str | None] = mapped_column(String(1024))  # the archive, while it is needed
    model_name: Mapped[str] = mapped_column(String(128))
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(Integer)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The webhook told when the job is over: its target, whether the event is still owed
    # (pending, delivered, failed: given up), and when the next attempt may go.
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    callback_status: Mapped[str | None] = mapped_column(String(16))
    callback_next_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_idempotency"),
        Index("ix_jobs_callback_due", "callback_status", "callback_next_at"),
    )


class CallbackAttempt(Base):
    """One try at delivering a job's webhook event, kept for the job's status."""

    __tablename__ = "callback_attempts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer)  # None: no answer
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[float] = mapped_column(Float)


class JobChunk(Base):
    """A unit of queued work: its images, and who holds it until when (its lease)."""

    __tablename__ = "job_chunks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    items: Mapped[list[Any]] = mapped_column(JSON)  # [[item number, name, offset, size], ...]
    status: Mapped[str] = mapped_column(String(16))  # queued, running, done
    claim: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_job_chunks_status_lease", "status", "lease_until"),)


class JobResult(Base):
    """One row per image of a job: the verdict, or why it could not be scored."""

    __tablename__ = "job_results"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    item: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(1024))
    label: Mapped[str | None] = mapped_column(String(64))
    band: Mapped[str | None] = mapped_column(String(16))
    probability: Mapped[float | None] = mapped_column(Float)
    scores: Mapped[dict[str, float] | None] = mapped_column(JSON)
    reasons: Mapped[str] = mapped_column(String(64), default="")
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    bytes: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(1000))
