"""GET /v1/ops/*: the operations view's read-only answers (scope ``ops`` or ``admin``).

Drift, models and rollout come from the routes that already answer them, so the page and
those routes never disagree.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query

from ai_photo_detector.contract.ops import (
    AccuracyOverTime,
    AccuracyPoint,
    AccuracySeries,
    AlertList,
    BandBucket,
    BandsOverTime,
    LoopModel,
    OpsAlert,
    OpsOverview,
    OpsWindow,
    RetrainingLoop,
    SourceFigures,
)
from ai_photo_detector.contract.review import NextRetrainOut
from ai_photo_detector.contract.schemas import (
    ModelRef,
)
from ai_photo_detector.model.inference import REVIEWED_KIND, UNFAMILIAR
from ai_photo_detector.persistence import ops as queries
from ai_photo_detector.persistence.review import QueueFilter, ReviewQueue
from ai_photo_detector.serving.api.auth import OpsCaller
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.errors import ApiError
from ai_photo_detector.serving.api.routes.admin import rollout_status
from ai_photo_detector.serving.api.routes.models import list_models
from ai_photo_detector.serving.api.routes.monitoring import get_drift
from ai_photo_detector.serving.api.routes.review import next_retrain_of, review_queue
from ai_photo_detector.serving.api.schemas import (
    error_responses,
)
from ai_photo_detector.serving.api.state import Services

router = APIRouter(prefix="/v1/ops", tags=["operations"])
ERRORS = error_responses(401, 403, 422, 429, 503)
MOST_HOURLY_DAYS = 31  # more hourly buckets than a chart can draw legibly

BucketQuery = Query("hour", description="Bucket size of the time series.")
DaysQuery = Query(7, ge=1, le=366, description="Days back from now the series cover.")
AlertsQuery = Query(20, ge=1, le=500, description="Most alerts returned, newest first.")


def _window(days: int, bucket: queries.Bucket) -> tuple[queries.Window, OpsWindow]:
    if bucket == "hour" and days > MOST_HOURLY_DAYS:
        raise ApiError(
            422, "too_many_buckets", f"hourly buckets cover at most {MOST_HOURLY_DAYS} days"
        )
    window = queries.Window.ending(datetime.now(UTC), days, bucket)
    return window, OpsWindow(days=days, bucket=bucket, start=window.start, end=window.end)


def _series(found: list[queries.AccuracySeries]) -> list[AccuracySeries]:
    return [
        AccuracySeries(
            model=ModelRef(name=series.model_name, version=series.model_version),
            reviewed=series.reviewed,
            accuracy=series.accuracy,
            points=[
                AccuracyPoint(
                    start=p.start, reviewed=p.reviewed, correct=p.correct, accuracy=p.accuracy
                )
                for p in series.points
            ],
        )
        for series in found
    ]


def _buckets(found: list[queries.BandBucket]) -> list[BandBucket]:
    return [
        BandBucket(
            start=b.start,
            total=b.total,
            bands=b.bands,
            reasons=b.reasons,
            reason_shares={reason: count / b.total for reason, count in b.reasons.items()},
        )
        for b in found
    ]


def _alerts(found: list[queries.RecentAlert]) -> list[OpsAlert]:
    return [
        OpsAlert(
            received_at=a.received_at,
            name=a.name,
            status=a.status,
            severity=a.severity,
            starts_at=a.starts_at,
            fingerprint=a.fingerprint,
            summary=a.annotations.get("summary"),
            labels=a.labels,
            annotations=a.annotations,
        )
        for a in found
    ]


def feedback_figures(metrics: dict[str, Any]) -> list[SourceFigures]:
    """A bundle's evaluation rows of the reviewed feedback it was retrained on."""
    rows = metrics.get("leave_one_source_out", {}).get("rows", [])

    def number(value: Any) -> float | None:
        return None if value is None or math.isnan(value) else float(value)

    return [
        SourceFigures(
            source=row["source"],
            fit=row["fit"],
            count=row["count"],
            roc_auc=number(row.get("roc_auc")),
            ai_band_tpr=number(row.get("ai_band_tpr")),
            ai_band_fpr=number(row.get("ai_band_fpr")),
            uncertain_share=number(row.get("uncertain_share")),
        )
        for row in rows
        if row.get("fit") == "cross_fitted"
    ]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _loop(
    services: Services,
    buckets: list[queries.BandBucket],
    waiting: dict[str, int],
    next_retrain: NextRetrainOut,
) -> RetrainingLoop:
    unfamiliar = [b.reasons.get(UNFAMILIAR, 0) for b in buckets]
    caught = [b.reasons.get(REVIEWED_KIND, 0) for b in buckets]
    total = sum(b.total for b in buckets)
    return RetrainingLoop(
        unfamiliar_share=_share(sum(unfamiliar), total),
        unfamiliar_share_latest=_share(unfamiliar[-1], buckets[-1].total) if buckets else None,
        reviewed_kind_share=_share(sum(caught), total),
        reviewed_kind_share_latest=_share(caught[-1], buckets[-1].total) if buckets else None,
        waiting=waiting,
        next_retrain=next_retrain,
        models=[
            LoopModel(
                model=ModelRef(name=model.name, version=model.version),
                role=role,
                feedback=feedback_figures(model.bundle.manifest.metrics),
            )
            for role, model in services.models.roles.items()
        ],
    )


def _waiting(queue: ReviewQueue) -> dict[str, int]:
    return queue.waiting("", QueueFilter(), 0)[1]


@router.get(
    "/accuracy",
    response_model=AccuracyOverTime,
    responses=ERRORS,
    summary="Live accuracy per model version and time bucket, from reviewed predictions",
)
async def accuracy(
    services: ServicesDep,
    _: OpsCaller,
    bucket: queries.Bucket = BucketQuery,
    days: int = DaysQuery,
) -> AccuracyOverTime:
    window, described = _window(days, bucket)
    found = await asyncio.to_thread(queries.accuracy_over_time, services.store, window)
    return AccuracyOverTime(window=described, series=_series(found))


@router.get(
    "/bands",
    response_model=BandsOverTime,
    responses=ERRORS,
    summary="Answers per band and reason shares per time bucket (primary route)",
)
async def bands(
    services: ServicesDep,
    _: OpsCaller,
    bucket: queries.Bucket = BucketQuery,
    days: int = DaysQuery,
) -> BandsOverTime:
    window, described = _window(days, bucket)
    found = await asyncio.to_thread(queries.band_shares, services.store, window)
    return BandsOverTime(window=described, buckets=_buckets(found))


@router.get(
    "/alerts",
    response_model=AlertList,
    responses=ERRORS,
    summary="The latest alerts recorded in the store, newest first",
)
async def alerts(services: ServicesDep, _: OpsCaller, limit: int = AlertsQuery) -> AlertList:
    found = await asyncio.to_thread(queries.recent_alerts, services.store, limit)
    return AlertList(alerts=_alerts(found))


@router.get(
    "/overview",
    response_model=OpsOverview,
    responses=ERRORS,
    summary="Everything the operations page shows, in one call",
)
async def overview(
    services: ServicesDep,
    caller: OpsCaller,
    bucket: queries.Bucket = BucketQuery,
    days: int = DaysQuery,
    alerts: int = AlertsQuery,
    drift_reports: int = Query(100, ge=1, le=1000, description="Most drift reports in history."),
) -> OpsOverview:
    window, described = _window(days, bucket)
    store = services.store
    queue = review_queue(services)
    found_accuracy, found_bands, found_alerts, drift, waiting, ready = await asyncio.gather(
        asyncio.to_thread(queries.accuracy_over_time, store, window),
        asyncio.to_thread(queries.band_shares, store, window),
        asyncio.to_thread(queries.recent_alerts, store, alerts),
        get_drift(services, caller, None, drift_reports),
        asyncio.to_thread(_waiting, queue),
        asyncio.to_thread(next_retrain_of, queue, services.settings),
    )
    return OpsOverview(
        generated_at=datetime.now(UTC),
        window=described,
        accuracy=_series(found_accuracy),
        bands=_buckets(found_bands),
        drift=drift,
        models=await list_models(services),
        rollout=await rollout_status(services, caller),
        alerts=_alerts(found_alerts),
        loop=_loop(services, found_bands, waiting, ready),
    )
