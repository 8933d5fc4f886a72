"""Feedback, live accuracy, drift and the Alertmanager webhook."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Query, Request, Response

from ai_photo_detector.contract.schemas import (
    AlertmanagerWebhook,
    AlertsRecorded,
    DriftEntry,
    DriftResponse,
    DriftRunResponse,
    FeedbackIn,
    FeedbackOut,
    LiveAccuracyItem,
    LiveAccuracyResponse,
    ModelRef,
)
from ai_photo_detector.persistence.alerts import AlertRecord, record_alerts
from ai_photo_detector.persistence.drift_history import history
from ai_photo_detector.persistence.feedback import (
    PredictionNotFound,
    live_accuracy,
    record_feedback,
)
from ai_photo_detector.serving.api.auth import AdminCaller, PredictCaller
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.errors import ApiError
from ai_photo_detector.serving.api.schemas import (
    error_responses,
)
from ai_photo_detector.serving.api.state import Services

router = APIRouter(prefix="/v1", tags=["monitoring"])


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    status_code=201,
    responses={**error_responses(401, 403, 404, 422, 429, 503), 200: {"model": FeedbackOut}},
    summary="Record a reviewer's verdict on a prediction (idempotent per prediction and source)",
)
async def post_feedback(
    body: FeedbackIn,
    request: Request,
    response: Response,
    services: ServicesDep,
    _: PredictCaller,
) -> FeedbackOut:
    store = services.store
    known = {label for m in services.models.models.values() for label in m.bundle.manifest.labels}
    if known and body.label not in known:
        raise ApiError(422, "invalid_label", f"label must be one of {sorted(known)}")
    owner = services.peers.owner(body.prediction_id)
    if owner is not None:  # made in another region: its verdict is stored there
        return await _relayed_feedback(services, owner, body, request, response)
    try:
        result = await asyncio.to_thread(record_feedback, store, *_args(body))
    except PredictionNotFound:
        # the log writes in batches: give a just-made prediction the time to land once
        if services.prediction_log is not None:
            await asyncio.to_thread(services.prediction_log.flush, 2.0)
        try:
            result = await asyncio.to_thread(record_feedback, store, *_args(body))
        except PredictionNotFound as exc:
            raise ApiError(404, "prediction_not_found", "no logged prediction has this id") from exc
    if not result.created:
        response.status_code = 200
    agreement = "agree" if result.predicted_label == body.label else "disagree"
    services.metrics.feedback.labels(body.source, agreement).inc()
    return FeedbackOut(
        prediction_id=body.prediction_id,
        label=body.label,
        source=body.source,
        created=result.created,
        updated=result.updated,
        predicted_label=result.predicted_label,
        model=ModelRef(name=result.model_name, version=result.model_version),
    )


async def _relayed_feedback(
    services: Services, region: str, body: FeedbackIn, request: Request, response: Response
) -> FeedbackOut:
    headers = dict(request.headers)
    relayed = await services.peers.relay(region, "POST", "/v1/feedback", body.model_dump(), headers)
    if relayed.status >= 400:  # the other region's refusal, as it said it
        error = relayed.body.get("error", {}) if isinstance(relayed.body, dict) else {}
        raise ApiError(
            relayed.status,
            str(error.get("code") or f"http_{relayed.status}"),
            f"region {region}: {error.get('message', 'refused')}",
        )
    response.status_code = relayed.status
    return FeedbackOut.model_validate(relayed.body)


def _args(body: FeedbackIn) -> tuple[str, str, str]:
    return body.prediction_id, body.label, body.source


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


@router.get(
    "/feedback/accuracy",
    response_model=LiveAccuracyResponse,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="Live accuracy per model version from reviewed predictions",
)
async def get_accuracy(
    services: ServicesDep,
    _: PredictCaller,
    window_hours: float = Query(None, gt=0, le=24 * 366, description="Default from settings."),
) -> LiveAccuracyResponse:
    store = services.store
    hours = window_hours or services.settings.monitoring.accuracy_window_hours
    since = datetime.now(UTC) - timedelta(hours=hours)
    results = await asyncio.to_thread(live_accuracy, store, since, services.settings.data.ai_label)
    return LiveAccuracyResponse(
        window_hours=hours,
        models=[
            LiveAccuracyItem(
                model=ModelRef(name=r.model_name, version=r.model_version),
                count=r.count,
                accuracy=r.accuracy,
                precision=_finite(r.precision),
                recall=_finite(r.recall),
                labels=r.labels,
                confusion=r.confusion,
            )
            for r in results
        ],
    )


@router.get(
    "/drift",
    response_model=DriftResponse,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="Latest drift reports and their history",
)
async def get_drift(
    services: ServicesDep,
    _: PredictCaller,
    model: str | None = Query(None, max_length=128),
    limit: int = Query(50, ge=1, le=1000),
) -> DriftResponse:
    entries = await asyncio.to_thread(history, services.store, model, limit)
    latest: dict[tuple[str, str, str], DriftEntry] = {}
    parsed = [DriftEntry(**entry) for entry in entries]
    # Newest first: keep the first per model version and window (a champion and its challenger
    # share the registered name, and each has its own drift).
    for entry in parsed:
        latest.setdefault((entry.model.name, entry.model.version, entry.window), entry)
    return DriftResponse(latest=list(latest.values()), history=parsed)


@router.post(
    "/drift/run",
    response_model=DriftRunResponse,
    responses=error_responses(401, 403, 429, 503),
    summary="Evaluate drift now (admin)",
)
async def run_drift(services: ServicesDep, _: AdminCaller) -> DriftRunResponse:
    store = services.store
    monitor = services.monitor
    if services.prediction_log is not None:
        await asyncio.to_thread(services.prediction_log.flush, 5.0)
    await asyncio.to_thread(monitor.run_all)
    entries = await asyncio.to_thread(history, store, None, 2 * max(1, len(services.models.models)))
    return DriftRunResponse(reports=[DriftEntry(**entry) for entry in entries])


def _alerts(payload: AlertmanagerWebhook) -> list[AlertRecord]:
    return [
        AlertRecord(
            name=alert.labels.get("alertname", "unnamed"),
            status=alert.status,
            severity=alert.labels.get("severity", "none"),
            starts_at=alert.startsAt,
            labels=alert.labels,
            annotations=alert.annotations,
            fingerprint=alert.fingerprint,
        )
        for alert in payload.alerts
    ]


@router.post(
    "/alerts",
    response_model=AlertsRecorded,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="Alertmanager webhook: record alerts in the store (admin)",
)
async def post_alerts(
    payload: AlertmanagerWebhook, services: ServicesDep, _: AdminCaller
) -> AlertsRecorded:
    alerts = _alerts(payload)
    count = await asyncio.to_thread(record_alerts, services.store, alerts)
    for alert in payload.alerts:
        services.metrics.alerts_received.labels(alert.status[:16]).inc()
    retrain = await services.retrainer.on_alerts(alerts)
    return AlertsRecorded(recorded=count, retrain=retrain)
