"""Hot reload and rollout control (admin scope), rollout status and the shadow report."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Query

from ai_photo_detector.contract.schemas import (
    ReloadResponse,
    RolloutStatus,
    RolloutUpdate,
    ShadowReport,
)
from ai_photo_detector.errors import ReloadFailed
from ai_photo_detector.monitoring.shadow import shadow_report
from ai_photo_detector.serving.api.auth import AdminCaller, PredictCaller
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.schemas import (
    error_responses,
)
from ai_photo_detector.serving.models import CHALLENGER, ReloadError

router = APIRouter(prefix="/v1", tags=["rollout"])


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="Reload every model from its reference (aliases re-resolved); old ones keep "
    "serving if a load fails",
)
async def reload(services: ServicesDep, _: AdminCaller) -> ReloadResponse:
    try:
        changes = await services.models.reload()
    except ReloadError as exc:
        services.metrics.reloads.labels("failed").inc()
        raise ReloadFailed(f"reload failed, previous model kept: {exc}") from exc
    services.metrics.reloads.labels("ok").inc()
    if CHALLENGER in changes and changes[CHALLENGER]["from"] != changes[CHALLENGER]["to"]:
        services.rollout.reset()
    services.publish_models()
    return ReloadResponse(reloaded=changes)


@router.post(
    "/admin/rollout",
    response_model=RolloutStatus,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="Load or remove the challenger, set the canary weight and shadow fraction",
)
async def update_rollout(
    body: RolloutUpdate, services: ServicesDep, _: AdminCaller
) -> RolloutStatus:
    rollout = services.rollout
    if body.challenger is not None:
        if body.challenger == "":
            services.models.remove(CHALLENGER)
        else:
            try:
                await services.models.swap(CHALLENGER, body.challenger)
            except ReloadError as exc:
                raise ReloadFailed(f"challenger not loaded: {exc}") from exc
        rollout.reset()
    if body.canary_weight is not None:
        rollout.canary_weight = body.canary_weight
        rollout.tripped = None if body.canary_weight > 0 else rollout.tripped
    if body.shadow_fraction is not None:
        rollout.shadow_fraction = body.shadow_fraction
    services.publish_models()
    return RolloutStatus(**rollout.status())


@router.get(
    "/rollout",
    response_model=RolloutStatus,
    responses=error_responses(401, 403, 429, 503),
    summary="Champion, challenger, canary and shadow state, and the guard's statistics",
)
async def rollout_status(services: ServicesDep, _: PredictCaller) -> RolloutStatus:
    return RolloutStatus(**services.rollout.status())


@router.get(
    "/shadow",
    response_model=ShadowReport,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="Paired champion/challenger predictions: disagreement, correlation, accuracy",
)
async def shadow(
    services: ServicesDep,
    _: PredictCaller,
    window_hours: float = Query(24.0, gt=0, le=24 * 366),
) -> ShadowReport:
    store = services.store
    if services.prediction_log is not None:
        await asyncio.to_thread(services.prediction_log.flush, 5.0)
    since = datetime.now(UTC) - timedelta(hours=window_hours)
    pairs = await asyncio.to_thread(shadow_report, store, since)
    return ShadowReport(window_hours=window_hours, pairs=pairs)
