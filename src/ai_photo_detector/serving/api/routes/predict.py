"""POST /v1/predict and /v1/predict/batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from ai_photo_detector.contract.schemas import (
    BatchItem,
    BatchResponse,
    ErrorBody,
    ModelRef,
    Prediction,
    PredictResponse,
)
from ai_photo_detector.errors import DetectorError, ModelNotReady, ShuttingDown
from ai_photo_detector.serving.api.auth import PredictCaller, Principal
from ai_photo_detector.serving.api.body import Upload, read_batch, read_one_image
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.errors import RETRY_LATER, http_status
from ai_photo_detector.serving.api.middleware import request_id_of
from ai_photo_detector.serving.api.schemas import (
    error_responses,
    prediction_fields,
)
from ai_photo_detector.serving.api.state import Services
from ai_photo_detector.serving.models import LoadedModel
from ai_photo_detector.serving.predictor import Caller, ScoredImage

router = APIRouter(prefix="/v1", tags=["predict"])

IMAGE_BODY: dict[str, Any] = {
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


NO_STORE = {"Cache-Control": "no-store"}


def _no_store(response: Response) -> None:
    response.headers.update(NO_STORE)


def prediction_response(body: BaseModel, response: Response) -> Response:
    """``body`` serialised once, uncached, with the headers dependencies set (rate limits).

    Returning the model instead would have FastAPI validate it all again; a returned Response
    does not get the dependencies' headers by itself, hence the copy.
    """
    headers = {**response.headers, **NO_STORE}
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


def ready_model(services: Services, model: LoadedModel) -> LoadedModel:
    if services.draining:
        raise ShuttingDown("the server is shutting down")
    if not model.ready:
        raise ModelNotReady(f"model {model.name} is not ready")
    if model.batcher.saturated:  # refuse before reading the body
        raise services.scorer.refuse_overloaded()
    return model


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Score one image",
    description="One image as multipart field `file` or as a raw `image/*` body. The format is "
    "decided by the file's bytes, not by its name or Content-Type.",
    responses=error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503),
    openapi_extra=IMAGE_BODY,
)
async def predict(
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PredictCaller,
    model: str | None = ModelQuery,
) -> Response:
    loaded = ready_model(services, pick_model(services, request, principal, model))
    image = await read_one_image(request, services.settings.server)
    caller = Caller(request_id_of(request.scope), principal.key_id)
    prediction = await score_routed(services, loaded, image, caller)
    body = PredictResponse.model_construct(
        **prediction_fields(prediction), request_id=caller.request_id
    )
    return prediction_response(body, response)


def pick_model(
    services: Services, request: Request, principal: Principal, name: str | None
) -> LoadedModel:
    """An explicitly named model, else the canary router's choice for this caller."""
    if name is not None:
        return services.models.get(name)
    sticky = request.headers.get(services.settings.rollout.sticky_header, "")[:256]
    client = request.client.host if request.client else ""
    return services.rollout.choose(sticky or principal.key_id or client)


@contextmanager
def watched(services: Services, model: LoadedModel) -> Iterator[None]:
    """Report the answer's latency and outcome to the canary guard (it watches only the
    challenger): every route a challenger can answer goes through here."""
    started = time.perf_counter()
    failed = True
    try:
        yield
        failed = False
    except DetectorError as exc:  # refusals for lack of room are not the model's failures
        failed = http_status(exc) >= 500 and not isinstance(exc, RETRY_LATER)
        raise
    finally:
        services.rollout.answered(model, (time.perf_counter() - started) * 1000, failed)


async def score_routed(
    services: Services, model: LoadedModel, data: bytes, caller: Caller
) -> ScoredImage:
    """Score, feed the canary guard, and mirror to the other model when rollout asks."""
    with watched(services, model):
        prediction = await services.scorer.score(model, data, caller)
    services.rollout.maybe_mirror(model, data, prediction, caller)
    return prediction


async def _batch_item(
    services: Services, model: LoadedModel, i: int, upload: Upload, caller: Caller
) -> BatchItem:
    try:
        result = await score_routed(services, model, upload.data, caller)
    except DetectorError as exc:
        body = ErrorBody(code=exc.code, message=exc.message, request_id="")
        return BatchItem(index=i, filename=upload.filename, error=body)
    answer = Prediction.model_construct(**prediction_fields(result))
    return BatchItem(index=i, filename=upload.filename, result=answer)


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
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PredictCaller,
    model: str | None = ModelQuery,
) -> BatchResponse:
    _no_store(response)
    loaded = ready_model(services, pick_model(services, request, principal, model))
    uploads = await read_batch(request, services.settings.server)
    caller = Caller(request_id_of(request.scope), principal.key_id)
    items = await asyncio.gather(
        *(_batch_item(services, loaded, i, upload, caller) for i, upload in enumerate(uploads))
    )
    request_id = request_id_of(request.scope)
    for item in items:
        if item.error is not None:
            item.error.request_id = request_id
    failed = sum(item.error is not None for item in items)
    answered = loaded.current()  # swapped in while the uploads were read, if it was
    return BatchResponse(
        request_id=request_id,
        model=ModelRef(name=answered.name, version=answered.version),
        results=list(items),
        succeeded=len(items) - failed,
        failed=failed,
    )
