"""Open Inference Protocol health and metadata routes, and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ai_photo_detector.contract.schemas import (
    Live,
    OipModelMetadata,
    OipModelReady,
    Ready,
)
from ai_photo_detector.serving.api.auth import require
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.schemas import (
    error_responses,
)

# Open by default (auth.open_paths); closing a path there makes it need the admin scope.
router = APIRouter(tags=["health"], dependencies=[Depends(require("admin"))])
NameParam = Path(max_length=128, description="Model name.")


@router.get("/v2/health/live", response_model=Live, responses=error_responses(401, 403, 429))
async def live() -> Live:
    return Live(live=True)


@router.get(
    "/v2/health/ready",
    response_model=Ready,
    responses={
        **error_responses(401, 403, 429),
        503: {"model": Ready, "description": "Not ready: no model loaded and warm."},
    },
)
async def ready(services: ServicesDep) -> JSONResponse:
    is_ready = services.models.ready and not services.draining
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get(
    "/v2/models/{name}",
    response_model=OipModelMetadata,
    responses=error_responses(401, 403, 404, 422, 429),
)
async def model_metadata(services: ServicesDep, name: str = NameParam) -> OipModelMetadata:
    model = services.models.get(name)
    manifest = model.bundle.manifest
    size = manifest.preprocessing.input_size
    channels, height, width = manifest.onnx.feature_shape
    return OipModelMetadata(
        name=model.name,
        versions=[model.version],
        platform="onnxruntime_onnx",
        inputs=[{"name": manifest.onnx.input, "datatype": "FP32", "shape": [-1, 3, size, size]}],
        outputs=[
            {"name": "logits", "datatype": "FP32", "shape": [-1, len(manifest.labels)]},
            {"name": "features", "datatype": "FP32", "shape": [-1, channels, height, width]},
            {"name": "embedding", "datatype": "FP32", "shape": [-1, manifest.onnx.embedding_size]},
        ],
    )


@router.get(
    "/v2/models/{name}/ready",
    response_model=OipModelReady,
    responses={
        **error_responses(401, 403, 404, 422, 429),
        503: {"model": OipModelReady, "description": "Not ready."},
    },
)
async def model_ready(services: ServicesDep, name: str = NameParam) -> JSONResponse:
    model = services.models.get(name)
    return JSONResponse(
        {"name": model.name, "ready": model.ready}, status_code=200 if model.ready else 503
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        **error_responses(401, 403, 429),
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
    },
)
async def metrics(services: ServicesDep) -> Response:
    for model in services.models.models.values():
        services.metrics.queue_depth.labels(model.name).set(model.batcher.depth)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
