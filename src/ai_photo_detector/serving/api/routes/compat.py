"""The original "AI Product Photo Detector" v1.0 API, answered by this service (opt-in).

Teams running v1.0 switch by changing the base URL: ``POST /predict`` (multipart field
``file``), ``POST /predict/batch`` (repeated field ``files``), ``POST /predict/explain`` and
``GET /health`` answer in v1.0's shapes (``src/inference/schemas.py`` of
nolancacheux/AI-Product-Photo-Detector: ``PredictResponse``, ``BatchPredictResponse``,
``ExplainResponse``, ``HealthResponse``). Mounted only with ``server.compat_v1`` on, and left
out of the OpenAPI document: the ``/v1`` contract is the published one, this is a migration aid.

Every answer comes from the same path as ``/v1/predict`` and ``/v1/explain``: the canary router
picks the model, the scorer decodes, infers, logs the prediction and counts it in the metrics,
auth scopes and rate limits are those of ``/v1``, and errors keep this service's JSON error
shape and codes (``{"error": {"code", "message", "request_id"}}``), not v1.0's.

Where each field comes from (``ScoredImage`` is what ``/v1/predict`` answers from):

======================= =======================================================================
v1.0 field              source
======================= =======================================================================
prediction              :func:`prediction_of`: band ``ai`` -> ``ai_generated``, ``real`` ->
                        ``real``; ``uncertain`` -> the model's own ``label`` at its calibrated
                        threshold (``ai_generated`` for the AI label)
probability             ``probability``: the calibrated probability of the AI label, unrounded
confidence              :func:`confidence_of`, from the band and the answering bundle's bands
inference_time_ms       ``timing``: queue_ms + preprocess_ms + inference_ms, rounded to 0.01
model_version           the answering model's version (``model.version`` in ``/v1``)
heatmap_base64          ``explanation.overlay_jpeg`` of ``/v1/explain``: the evidence map drawn
                        over the model's view of the photo, base64 JPEG
batch filename          the multipart part's file name, ``"unknown"`` without one
batch error             the item's error message (``error_code``, added: its stable code)
total_inference_time_ms wall time scoring the whole batch (its items are scored concurrently)
health status           ``healthy`` when every loaded model is ready and the server is not
                        shutting down (as ``/v2/health/ready``), else ``unhealthy``; always 200,
                        as in v1.0
health model_loaded     the default model is loaded and warm
health uptime_seconds   seconds since this app finished starting (models loaded)
======================= =======================================================================

Not answered: the later v1.x health fields (``active_requests``, ``drift_detected``,
``predictions_total``), v1.0's own size and batch-count limits (``server.max_upload_bytes`` and
``server.max_batch_items`` apply) and its content-type check (formats are decided by bytes).
``GET /health`` is guarded like the health router's routes: open only where ``auth.open_paths``
lists it (add ``/health`` there to have it open, as v1.0 had it), else it needs the admin scope
where keys are required.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel

from ai_photo_detector.errors import DetectorError
from ai_photo_detector.model.bundle import Bands
from ai_photo_detector.model.inference import PROVENANCE
from ai_photo_detector.serving.api.auth import PredictCaller, require
from ai_photo_detector.serving.api.body import Upload, read_batch, read_one_image
from ai_photo_detector.serving.api.deps import ServicesDep
from ai_photo_detector.serving.api.middleware import request_id_of
from ai_photo_detector.serving.api.routes.explain import explain_routed
from ai_photo_detector.serving.api.routes.predict import (
    NO_STORE,
    pick_model,
    prediction_response,
    ready_model,
    score_routed,
)
from ai_photo_detector.serving.api.state import Services
from ai_photo_detector.serving.models import LoadedModel
from ai_photo_detector.serving.predictor import Caller, ScoredImage

PredictionLabel = Literal["ai_generated", "real"]
Confidence = Literal["low", "medium", "high"]
_STARTED = "compat_v1_started"  # lifespan state: when the app finished starting


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
    """Entered inside the app's own lifespan, once its models are loaded: uptime counts from
    there, as v1.0's did from its model load."""
    yield {_STARTED: time.monotonic()}


router = APIRouter(tags=["compat (v1.0)"], include_in_schema=False, lifespan=_lifespan)


class CompatPrediction(BaseModel):
    """v1.0 ``PredictResponse``."""

    prediction: PredictionLabel
    probability: float
    confidence: Confidence
    inference_time_ms: float
    model_version: str


class CompatBatchItem(BaseModel):
    """v1.0 ``BatchItemResult``, plus ``error_code``: this service's stable code of the error."""

    filename: str
    prediction: PredictionLabel | None = None
    probability: float | None = None
    confidence: Confidence | None = None
    error: str | None = None
    error_code: str | None = None


class CompatBatch(BaseModel):
    """v1.0 ``BatchPredictResponse``."""

    results: list[CompatBatchItem]
    total: int
    successful: int
    failed: int
    total_inference_time_ms: float
    model_version: str


class CompatExplanation(CompatPrediction):
    """v1.0 ``ExplainResponse``."""

    heatmap_base64: str


class CompatHealth(BaseModel):
    """v1.0 ``HealthResponse``."""

    status: Literal["healthy", "unhealthy"]
    model_loaded: bool
    model_version: str
    uptime_seconds: float


def prediction_of(band: str, says_ai: bool) -> PredictionLabel:
    """v1.0's two classes from the band; an abstention ('uncertain') gives the model's own
    label at its calibrated decision threshold (``says_ai``), which :func:`confidence_of`
    marks 'low'. Not probability >= 0.5: the threshold is where the bundle was calibrated."""
    if band == "ai":
        return "ai_generated"
    if band == "real":
        return "real"
    return "ai_generated" if says_ai else "real"


def confidence_of(
    band: str, probability: float, bands: Bands, reasons: list[str] | tuple[str, ...] = ()
) -> Confidence:
    """v1.0's confidence, from the bundle's calibrated bands.

    - ``uncertain`` (the model abstained: between the bands, or an unfamiliar photo): ``low``;
    - ``ai`` decided by trusted Content Credentials (reason ``provenance``): ``high``;
    - ``ai``, band ``[ai_from, 1]``: ``high`` in its upper half,
      ``probability >= (ai_from + 1) / 2``, else ``medium``;
    - ``real``, band ``[0, real_below)``: ``high`` in its lower half,
      ``probability < real_below / 2``, else ``medium``.
    """
    if band == "ai":
        if PROVENANCE in reasons:
            return "high"
        return "high" if probability >= (bands.ai_from + 1) / 2 else "medium"
    if band == "real":
        return "high" if probability < bands.real_below / 2 else "medium"
    return "low"


def _answering(model: LoadedModel, image: ScoredImage) -> LoadedModel:
    """The model that scored ``image``: ``model`` or a successor swapped in meanwhile."""
    current: LoadedModel | None = model
    while current is not None:
        if current.name == image.model_name and current.version == image.model_version:
            return current
        current = current.successor
    return model.current()


def _fields(model: LoadedModel, image: ScoredImage) -> dict[str, Any]:
    manifest = _answering(model, image).bundle.manifest
    bands = manifest.calibration.bands
    timing = image.timing
    return {
        "prediction": prediction_of(image.band, image.label == manifest.ai_label),
        "probability": image.probability,
        "confidence": confidence_of(image.band, image.probability, bands, image.reasons),
        "inference_time_ms": round(timing.queue_ms + timing.preprocess_ms + timing.inference_ms, 2),
        "model_version": image.model_version,
    }


@router.post("/predict", response_model=CompatPrediction)
async def predict(
    request: Request, response: Response, services: ServicesDep, principal: PredictCaller
) -> Response:
    loaded = ready_model(services, pick_model(services, request, principal, None))
    image = await read_one_image(request, services.settings.server)
    caller = Caller(request_id_of(request.scope), principal.key_id)
    scored = await score_routed(services, loaded, image, caller)
    return prediction_response(CompatPrediction(**_fields(loaded, scored)), response)


async def _batch_item(
    services: Services, model: LoadedModel, upload: Upload, caller: Caller
) -> CompatBatchItem:
    filename = upload.filename or "unknown"
    try:
        scored = await score_routed(services, model, upload.data, caller)
    except DetectorError as exc:
        return CompatBatchItem(filename=filename, error=exc.message, error_code=exc.code)
    fields = _fields(model, scored)
    return CompatBatchItem(
        filename=filename,
        prediction=fields["prediction"],
        probability=fields["probability"],
        confidence=fields["confidence"],
    )


@router.post("/predict/batch", response_model=CompatBatch)
async def predict_batch(
    request: Request, response: Response, services: ServicesDep, principal: PredictCaller
) -> Response:
    loaded = ready_model(services, pick_model(services, request, principal, None))
    uploads = await read_batch(request, services.settings.server)
    caller = Caller(request_id_of(request.scope), principal.key_id)
    started = time.perf_counter()
    items = await asyncio.gather(*(_batch_item(services, loaded, u, caller) for u in uploads))
    elapsed_ms = (time.perf_counter() - started) * 1000
    failed = sum(item.error_code is not None for item in items)
    body = CompatBatch(
        results=list(items),
        total=len(items),
        successful=len(items) - failed,
        failed=failed,
        total_inference_time_ms=round(elapsed_ms, 2),
        model_version=loaded.current().version,  # swapped in while the uploads were read
    )
    return prediction_response(body, response)


@router.post("/predict/explain", response_model=CompatExplanation)
async def predict_explain(
    request: Request, response: Response, services: ServicesDep, principal: PredictCaller
) -> Response:
    loaded = ready_model(services, pick_model(services, request, principal, None))
    image = await read_one_image(request, services.settings.server)
    caller = Caller(request_id_of(request.scope), principal.key_id)
    scored, _, picture = await explain_routed(services, loaded, image, caller, overlay=True)
    assert picture is not None  # asked for
    heatmap = base64.b64encode(picture).decode("ascii")
    body = CompatExplanation(**_fields(loaded, scored), heatmap_base64=heatmap)
    return prediction_response(body, response)


@router.get(
    "/health",
    response_model=CompatHealth,
    dependencies=[Depends(require("admin"))],  # open where auth.open_paths lists /health
)
async def health(request: Request, response: Response, services: ServicesDep) -> CompatHealth:
    response.headers.update(NO_STORE)
    models = services.models
    default = models.champion  # the default model
    loaded = default is not None and default.ready
    started = getattr(request.state, _STARTED, None)
    return CompatHealth(
        status="healthy" if models.ready and not services.draining else "unhealthy",
        model_loaded=loaded,
        model_version=default.version if default is not None else "unknown",
        uptime_seconds=round(time.monotonic() - started, 2) if started is not None else 0.0,
    )
