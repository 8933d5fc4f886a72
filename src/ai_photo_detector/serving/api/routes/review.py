"""/v1/review: the reviewer's queue (list, claim, verdict, release) and the queued image.

Reviewers need the ``review`` scope. A verdict is stored as feedback with source
``review:<key id>`` and counts in live accuracy and retraining like any other.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse

from ai_photo_detector.contract.review import (
    ClaimOut,
    NextRetrainOut,
    ReviewFilter,
    ReviewItemOut,
    ReviewQueueOut,
    ShadowAnswer,
    VerdictIn,
    VerdictOut,
)
from ai_photo_detector.contract.schemas import (
    Explanation,
    ModelRef,
)
from ai_photo_detector.persistence.feedback import PredictionNotFound
from ai_photo_detector.persistence.review import (
    COUNT_LIMIT,
    NotClaimed,
    QueueFilter,
    ReviewItem,
    ReviewQueue,
)
from ai_photo_detector.persistence.store import aware
from ai_photo_detector.serving.api.auth import Principal, ReviewCaller
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.errors import ApiError
from ai_photo_detector.serving.api.middleware import request_id_of
from ai_photo_detector.serving.api.routes.predict import ready_model, watched
from ai_photo_detector.serving.api.schemas import (
    error_responses,
)
from ai_photo_detector.serving.api.state import Services
from ai_photo_detector.serving.models import LoadedModel
from ai_photo_detector.serving.predictor import Caller
from ai_photo_detector.settings import Settings

router = APIRouter(prefix="/v1/review", tags=["review"])
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


def review_queue(services: Services) -> ReviewQueue:
    settings = services.settings.review
    thresholds = {
        (model.name, model.version): model.bundle.manifest.calibration.threshold
        for model in services.models.roles.values()
    }
    return ReviewQueue(
        services.store, settings.lease_s, settings.sample_rate, settings.order, thresholds
    )


def reviewer_of(caller: Principal) -> str:
    return caller.key_id or "anonymous"


def _filters(body: ReviewFilter) -> QueueFilter:
    values = body.model_dump()
    for bound in ("since", "until"):  # compared in UTC, as the store writes
        if values[bound] is not None:
            values[bound] = aware(values[bound])
    return QueueFilter(**values)


def _out(item: ReviewItem) -> ReviewItemOut:
    kept = item.image_path is not None and Path(item.image_path).is_file()
    return ReviewItemOut(
        prediction_id=item.prediction_id,
        kind=item.kind,
        created_at=item.created_at,
        model=ModelRef(name=item.model_name, version=item.model_version),
        label=item.label,
        band=item.band,
        score=item.score,
        reasons=item.reasons,
        width=item.width,
        height=item.height,
        format=item.format,
        image_url=f"/v1/review/items/{item.prediction_id}/image" if kept else None,
        provenance=item.provenance,
        shadow=ShadowAnswer.model_validate(item.shadow) if item.shadow else None,
        lease_expires_at=item.lease_expires_at,
    )


@router.get(
    "/queue",
    response_model=ReviewQueueOut,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="Predictions waiting for review, in policy order (not those leased to others)",
)
async def get_queue(
    services: ServicesDep,
    caller: ReviewCaller,
    filters: Annotated[ReviewFilter, Query()],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ReviewQueueOut:
    queue = review_queue(services)
    items, counts = await asyncio.to_thread(
        queue.waiting, reviewer_of(caller), _filters(filters), limit
    )
    return ReviewQueueOut(
        items=[_out(i) for i in items],
        counts=counts,
        count_limit=COUNT_LIMIT,
        next_retrain=await asyncio.to_thread(next_retrain_of, queue, services.settings),
    )


def next_retrain_of(queue: ReviewQueue, settings: Settings) -> NextRetrainOut:
    """What ``retrain`` would take from the reviews now (a blocking store query)."""
    days = settings.retraining.feedback_days
    ready = queue.next_retrain(datetime.now(UTC) - timedelta(days=days))
    return NextRetrainOut(**ready, window_days=days)


@router.post(
    "/claim",
    response_model=ClaimOut,
    responses=error_responses(401, 403, 422, 429, 503),
    summary="Lease the next waiting item (your own unexpired lease first)",
)
async def claim(services: ServicesDep, caller: ReviewCaller, body: ReviewFilter) -> ClaimOut:
    item = await asyncio.to_thread(
        review_queue(services).claim, reviewer_of(caller), _filters(body)
    )
    return ClaimOut(item=_out(item) if item else None)


@router.post(
    "/items/{prediction_id}/verdict",
    response_model=VerdictOut,
    responses=error_responses(401, 403, 404, 409, 422, 429, 503),
    summary="Give the verdict on a leased item (a label, or 'skip'); ends the lease",
)
async def verdict(
    prediction_id: str, body: VerdictIn, services: ServicesDep, caller: ReviewCaller
) -> VerdictOut:
    known = {label for m in services.models.models.values() for label in m.bundle.manifest.labels}
    if body.label != "skip" and known and body.label not in known:
        raise ApiError(422, "invalid_label", f"label must be one of {sorted(known)} or 'skip'")
    reviewer = reviewer_of(caller)
    try:
        result = await asyncio.to_thread(
            review_queue(services).verdict,
            reviewer,
            prediction_id,
            body.label,
            f"review:{reviewer}",
        )
    except NotClaimed as exc:
        raise ApiError(
            409, "not_claimed", "claim the item first; your lease may have expired"
        ) from exc
    except PredictionNotFound as exc:
        raise ApiError(404, "prediction_not_found", "no logged prediction has this id") from exc
    if result is not None:
        agreement = "agree" if result.predicted_label == body.label else "disagree"
        services.metrics.feedback.labels("review", agreement).inc()
    return VerdictOut(
        prediction_id=prediction_id,
        label=body.label,
        recorded=result is not None,
        predicted_label=result.predicted_label if result else None,
    )


@router.post(
    "/items/{prediction_id}/release",
    status_code=204,
    responses=error_responses(401, 403, 404, 422, 429, 503),
    summary="Give a leased item back to the queue",
)
async def release(prediction_id: str, services: ServicesDep, caller: ReviewCaller) -> Response:
    if not await asyncio.to_thread(
        review_queue(services).release, reviewer_of(caller), prediction_id
    ):
        raise ApiError(404, "not_claimed", "you hold no lease on this item")
    return Response(status_code=204)


@router.get(
    "/items/{prediction_id}",
    response_model=ReviewItemOut,
    responses=error_responses(401, 403, 404, 422, 429, 503),
    summary="One logged prediction as the queue shows it",
)
async def get_item(prediction_id: str, services: ServicesDep, _: ReviewCaller) -> ReviewItemOut:
    item = await asyncio.to_thread(review_queue(services).item, prediction_id)
    if item is None:
        raise ApiError(404, "prediction_not_found", "no logged prediction has this id")
    return _out(item)


@router.get(
    "/items/{prediction_id}/image",
    responses={
        **error_responses(401, 403, 404, 422, 429, 503),
        200: {"content": {t: {} for t in IMAGE_TYPES.values()}},
    },
    summary="The retained upload (kept only with prediction_log.store_images, for its retention)",
)
async def get_image(prediction_id: str, services: ServicesDep, _: ReviewCaller) -> FileResponse:
    item = await asyncio.to_thread(review_queue(services).item, prediction_id)
    path = _retained(item)
    assert item is not None
    return FileResponse(
        path,
        media_type=IMAGE_TYPES.get(item.format, "application/octet-stream"),
        headers={"Cache-Control": "private, no-store"},
    )


def _retained(item: ReviewItem | None) -> Path:
    if item is None:
        raise ApiError(404, "prediction_not_found", "no logged prediction has this id")
    path = Path(item.image_path) if item.image_path else None
    if path is None or not path.is_file():
        raise ApiError(404, "image_not_retained", "the image was not kept or is past retention")
    return path


def _answering_model(services: Services, item: ReviewItem) -> LoadedModel:
    """The loaded model that gave the answer (same name and version), else one of its name,
    else the champion: a retired version's evidence can only be shown by its successor."""
    loaded = list(services.models.models.values())
    exact = [m for m in loaded if (m.name, m.version) == (item.model_name, item.model_version)]
    named = [m for m in loaded if m.name == item.model_name]
    if exact or named:
        return (exact or named)[0]
    return services.models.get(None)


@router.get(
    "/items/{prediction_id}/explanation",
    response_model=Explanation,
    responses=error_responses(401, 403, 404, 409, 422, 429, 503),
    summary="The evidence behind a queued item, from its retained image (not logged again); "
    "from the model version that answered while it is loaded",
)
async def get_explanation(
    prediction_id: str, request: Request, services: ServicesDep, caller: ReviewCaller
) -> Explanation:
    item = await asyncio.to_thread(review_queue(services).item, prediction_id)
    data = await asyncio.to_thread(_retained(item).read_bytes)
    assert item is not None
    loaded = ready_model(services, _answering_model(services, item))
    caller_ref = Caller(request_id_of(request.scope), caller.key_id)
    with watched(services, loaded):
        _, evidence, picture = await services.scorer.explain(
            loaded, data, caller_ref, overlay=True, route="review"
        )
    return Explanation(
        target=evidence.target,
        against=evidence.against,
        grid=[[round(float(v), 5) for v in row] for row in evidence.grid],
        margin=evidence.margin,
        overlay_jpeg=base64.b64encode(picture).decode("ascii") if picture is not None else None,
    )
