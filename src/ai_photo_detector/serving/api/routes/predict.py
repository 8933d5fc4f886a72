"""POST /v1/predict and /v1/predict/batch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response

from ai_photo_detector.imaging import DecodedImage, ImageError, preprocess_bytes
from ai_photo_detector.inference import verdicts
from ai_photo_detector.serving.api.auth import require
from ai_photo_detector.serving.api.body import Upload, read_uploads
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.middleware import request_id_of
from ai_photo_detector.serving.api.schemas import (
    BatchItem,
    BatchResponse,
    ErrorBody,
    ImageMeta,
    ModelRef,
    Prediction,
    PredictResponse,
    Timing,
    error_responses,
)
from ai_photo_detector.serving.api.state import Services
from ai_photo_detector.serving.engine import Ticket
from ai_photo_detector.serving.errors import IMAGE_ERROR_STATUS, ApiError, Overloaded
from ai_photo_detector.serving.models import LoadedModel

router = APIRouter(prefix="/v1", tags=["predict"], dependencies=[Depends(require("predict"))])

_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["files"],
                }
            }
        },
    }
}
ModelQuery = Query(None, description="Model name (default: the default model).", max_length=128)


def _image_error(services: Services, exc: ImageError) -> ApiError:
    services.metrics.input_errors.labels(exc.code).inc()
    return ApiError(IMAGE_ERROR_STATUS.get(exc.code, 422), exc.code, exc.message)


async def score_image(services: Services, model: LoadedModel, data: bytes) -> Prediction:
    """Decode off the event loop, infer through the micro-batcher, build the calibrated answer."""
    loop = asyncio.get_running_loop()
    try:
        ticket = model.batcher.admit()
    except Overloaded as exc:
        raise _overloaded(services, exc) from exc
    try:
        return await _decode_and_infer(services, model, data, ticket, loop)
    finally:
        model.batcher.release(ticket)


def _overloaded(services: Services, exc: Overloaded) -> ApiError:
    services.metrics.overloaded.inc()
    retry = str(services.settings.server.retry_after_s)
    return ApiError(503, "overloaded", str(exc), {"Retry-After": retry})


async def _decode_and_infer(
    services: Services,
    model: LoadedModel,
    data: bytes,
    ticket: Ticket,
    loop: asyncio.AbstractEventLoop,
) -> Prediction:
    metrics = services.metrics
    manifest = model.bundle.manifest
    started = time.perf_counter()
    try:
        array, decoded = await loop.run_in_executor(
            services.decode_pool,
            preprocess_bytes,
            data,
            manifest.preprocessing,
            services.models.limits,
        )
    except ImageError as exc:
        raise _image_error(services, exc) from exc
    preprocess_s = time.perf_counter() - started
    try:
        result = await model.batcher.submit(array, ticket)
    except Overloaded as exc:
        raise _overloaded(services, exc) from exc
    finally:
        metrics.queue_depth.labels(model.name).set(model.batcher.depth)
    verdict = verdicts(np.asarray(result.logits)[None, :], manifest)[0]
    _observe(services, model, decoded, verdict.label, verdict.band, verdict.probability)
    metrics.preprocess_seconds.observe(preprocess_s)
    metrics.queue_seconds.observe(result.queue_ms / 1000)
    metrics.inference_seconds.observe(result.inference_ms / 1000)
    metrics.batch_size.observe(result.batch_size)
    info = decoded.info
    return Prediction(
        label=verdict.label,
        band=verdict.band,
        probability=verdict.probability,
        scores=verdict.scores,
        model=ModelRef(name=model.name, version=model.version),
        timing=Timing(
            queue_ms=result.queue_ms,
            preprocess_ms=preprocess_s * 1000,
            inference_ms=result.inference_ms,
        ),
        image=ImageMeta(
            width=info.width,
            height=info.height,
            format=info.format,
            bytes=info.bytes,
            sha256=info.sha256,
        ),
    )


def _observe(
    services: Services,
    model: LoadedModel,
    decoded: DecodedImage,
    label: str,
    band: str,
    probability: float,
) -> None:
    metrics = services.metrics
    metrics.predictions.labels(model.name, model.version, label, band).inc()
    metrics.score.labels(model.name).observe(probability)
    metrics.image_bytes.observe(decoded.info.bytes)
    metrics.image_pixels.observe(decoded.info.width * decoded.info.height)


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


def _ready_model(services: Services, name: str | None) -> LoadedModel:
    if services.draining:
        retry = str(services.settings.server.retry_after_s)
        raise ApiError(503, "shutting_down", "the server is shutting down", {"Retry-After": retry})
    model = services.models.get(name)
    if not model.ready:
        raise ApiError(503, "not_ready", f"model {model.name} is not ready")
    if model.batcher.saturated:  # refuse before reading the body
        raise _overloaded(services, Overloaded("the inference queue is full"))
    return model


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Score one image",
    description="One image as multipart field `file` or as a raw `image/*` body. The format is "
    "decided by the file's bytes, not by its name or Content-Type.",
    responses=error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503),
    openapi_extra=_IMAGE_BODY,
)
async def predict(
    request: Request, response: Response, services: ServicesDep, model: str | None = ModelQuery
) -> PredictResponse:
    _no_store(response)
    loaded = _ready_model(services, model)
    server = services.settings.server
    uploads = await read_uploads(request, server.max_upload_bytes, 1, "file")
    prediction = await score_image(services, loaded, uploads[0].data)
    return PredictResponse(**prediction.model_dump(), request_id=request_id_of(request.scope))


async def _batch_item(services: Services, model: LoadedModel, i: int, upload: Upload) -> BatchItem:
    try:
        result = await score_image(services, model, upload.data)
    except ApiError as exc:
        body = ErrorBody(code=exc.code, message=exc.message, request_id="")
        return BatchItem(index=i, filename=upload.filename, error=body)
    return BatchItem(index=i, filename=upload.filename, result=result)


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    summary="Score several images",
    description="Up to `server.max_batch_items` images as repeated multipart field `files`. "
    "Each item gets a result or an error; one bad image does not fail the others.",
    responses=error_responses(400, 401, 403, 404, 413, 422, 429, 503),
    openapi_extra=_BATCH_BODY,
)
async def predict_batch(
    request: Request, response: Response, services: ServicesDep, model: str | None = ModelQuery
) -> BatchResponse:
    _no_store(response)
    loaded = _ready_model(services, model)
    server = services.settings.server
    limit = server.max_upload_bytes * server.max_batch_items
    uploads = await read_uploads(request, limit, server.max_batch_items, "files")
    items = await asyncio.gather(
        *(_batch_item(services, loaded, i, upload) for i, upload in enumerate(uploads))
    )
    request_id = request_id_of(request.scope)
    for item in items:
        if item.error is not None:
            item.error.request_id = request_id
    failed = sum(item.error is not None for item in items)
    return BatchResponse(
        request_id=request_id,
        model=ModelRef(name=loaded.name, version=loaded.version),
        results=list(items),
        succeeded=len(items) - failed,
        failed=failed,
    )
