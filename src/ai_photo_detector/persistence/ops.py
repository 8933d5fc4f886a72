"""Read-only queries behind the operations view: live accuracy and band shares per time
bucket, and the latest alerts.

Times are bucketed in UTC. Band counts cover every answer, so they are grouped in SQL (the
bucket expression is the one thing that differs between SQLite and PostgreSQL); reviewed
answers are few, so their latest verdicts are picked and bucketed in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, literal_column, select

from ai_photo_detector.persistence.feedback import latest_verdicts
from ai_photo_detector.persistence.schema import Alert, Prediction
from ai_photo_detector.persistence.store import Store, aware

Bucket = Literal["hour", "day"]
BUCKET_SIZE: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
BANDS = ("ai", "real", "uncertain")


def floor(moment: datetime, bucket: Bucket) -> datetime:
    moment = aware(moment).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


@dataclass(frozen=True)
class Window:
    """Whole buckets from the one holding ``now - days`` to the one holding ``now``."""

    start: datetime
    end: datetime
    bucket: Bucket

    @classmethod
    def ending(cls, now: datetime, days: int, bucket: Bucket) -> Window:
        start = floor(now - timedelta(days=days), bucket)
        return cls(start, floor(now, bucket) + BUCKET_SIZE[bucket], bucket)


@dataclass
class AccuracyPoint:
    start: datetime
    reviewed: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.reviewed


@dataclass
class AccuracySeries:
    model_name: str
    model_version: str
    points: list[AccuracyPoint] = field(default_factory=list)  # oldest first, reviewed only

    @property
    def reviewed(self) -> int:
        return sum(point.reviewed for point in self.points)

    @property
    def accuracy(self) -> float:
        return sum(point.correct for point in self.points) / self.reviewed


def accuracy_over_time(store: Store, window: Window) -> list[AccuracySeries]:
    """Per model version and bucket of the prediction's time: how many answers were reviewed
    and how many of them matched the latest verdict (as :func:`..feedback.live_accuracy`)."""
    found = latest_verdicts(
        store, Prediction.created_at >= window.start, Prediction.created_at < window.end
    )
    points: dict[tuple[str, str], dict[datetime, AccuracyPoint]] = {}
    for item in found:
        start = floor(item.created_at, window.bucket)
        series = points.setdefault((item.model_name, item.model_version), {})
        point = series.setdefault(start, AccuracyPoint(start))
        point.reviewed += 1
        point.correct += int(item.predicted == item.reviewed)
    return [
        AccuracySeries(model, version, [by_start[start] for start in sorted(by_start)])
        for (model, version), by_start in sorted(points.items())
    ]


@dataclass
class BandBucket:
    start: datetime
    total: int = 0
    bands: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BANDS, 0))
    reasons: dict[str, int] = field(default_factory=dict)  # answers that list each reason


def _bucket_of(dialect: str, bucket: Bucket) -> ColumnElement[Any]:
    # Literal SQL, not bound parameters: PostgreSQL would see the SELECT and GROUP BY
    # expressions as different ones. ``bucket`` is one of two fixed words.
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), Prediction.created_at)
        return func.date_trunc(literal_column(f"'{bucket}'"), utc)
    if dialect == "sqlite":
        pattern = "%Y-%m-%d %H:00:00" if bucket == "hour" else "%Y-%m-%d 00:00:00"
        return func.strftime(literal_column(f"'{pattern}'"), Prediction.created_at)
    raise ValueError(f"time buckets are not written for the {dialect} dialect")


def _bucket_start(value: datetime | str) -> datetime:
    return aware(datetime.fromisoformat(value) if isinstance(value, str) else value)


def band_shares(store: Store, window: Window) -> list[BandBucket]:
    """Per bucket (oldest first, empty ones left out): the primary route's answers per band and
    per reason; an answer with two reasons counts once for each."""
    bucket = _bucket_of(store.engine.dialect.name, window.bucket).label("bucket")
    query = (
        select(bucket, Prediction.band, Prediction.reasons, func.count())
        .where(
            Prediction.route == "primary",
            Prediction.created_at >= window.start,
            Prediction.created_at < window.end,
        )
        .group_by(bucket, Prediction.band, Prediction.reasons)
    )
    buckets: dict[datetime, BandBucket] = {}
    with store.session() as session:
        for value, band, reasons, count in session.execute(query):
            start = _bucket_start(value)
            found = buckets.setdefault(start, BandBucket(start))
            found.total += count
            found.bands[band] = found.bands.get(band, 0) + count
            for reason in filter(None, (reasons or "").split(",")):
                found.reasons[reason] = found.reasons.get(reason, 0) + count
    return [buckets[start] for start in sorted(buckets)]


@dataclass(frozen=True)
class RecentAlert:
    received_at: datetime
    name: str
    status: str
    severity: str
    starts_at: str
    fingerprint: str
    labels: dict[str, Any]
    annotations: dict[str, Any]


def recent_alerts(store: Store, limit: int) -> list[RecentAlert]:
    query = select(Alert).order_by(Alert.received_at.desc(), Alert.id.desc()).limit(limit)
    with store.session() as session:
        return [
            RecentAlert(
                received_at=aware(row.received_at),
                name=row.name,
                status=row.status,
                severity=row.severity,
                starts_at=row.starts_at,
                fingerprint=row.fingerprint,
                labels=row.labels,
                annotations=row.annotations,
            )
            for row in session.scalars(query)
        ]
