"""Score one uploaded image: admission, decode off the loop, micro-batched inference, the
calibrated answer, metrics and the prediction log row."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ai_photo_detector.bundle import BundleError
from ai_photo_detector.errors import ExplanationUnavailable, Overloaded
from ai_photo_detector.explain import Evidence, evidence, overlay_jpeg
from ai_photo_detector.image_stats import image_statistics
from ai_photo_detector.imaging import (
    DecodedImage,
    DecodeLimits,
    ImageError,
    PreprocessSpec,
    decode_image,
    model_view,
    normalise,
)
from ai_photo_detector.inference import verdicts
from ai_photo_detector.monitoring.prediction_log import PredictionRecord
from ai_photo_detector.serving.api.schemas import ImageMeta, ModelRef, Prediction, Timing
from ai_photo_detector.serving.api.state import Services
from ai_photo_detector.serving.engine import EngineResult, MicroBatcher, Ticket
from ai_photo_detector.serving.models import LoadedModel
from ai_photo_detector.serving.spare_time import SpareTimeExecutor


@dataclass(frozen=True)
class Caller:
    request_id: str
    api_key_id: str | None


@dataclass
class Prepared:
    array: NDArray[np.float32]
    view: Image.Image  # what the model sees: the prediction log measures its statistics
    decoded: DecodedImage
    result: EngineResult | None = None  # already inferred: the image came alone


def prepare(
    data: bytes,
    spec: PreprocessSpec,
    limits: DecodeLimits,
    side_pool: Executor,
    spare_time: SpareTimeExecutor,
    batcher: MicroBatcher,
    explain: bool = False,
) -> Prepared:
    """Runs on a decode thread: decode and resize while the side thread scans for markup (and
    earlier answers' log rows are made in spare time), then infer right here if the image is
    alone (:meth:`MicroBatcher.run_alone`) or to be explained
    (:meth:`MicroBatcher.run_explained`)."""
    spare_time.decode_started()
    decoded = decode_image(data, spec, limits, beside=side_pool)
    view = model_view(decoded.image, spec)
    array = normalise(view, spec)
    result = batcher.run_explained(array) if explain else batcher.run_alone(array)
    return Prepared(array, view, decoded, result)


def image_error(services: Services, exc: ImageError) -> ImageError:
    """Count an unusable image (by code) on its way to the caller."""
    services.metrics.input_errors.labels(exc.code).inc()
    return exc


def overloaded(services: Services, exc: Overloaded) -> Overloaded:
    """Count a refusal for lack of room on its way to the caller."""
    services.metrics.overloaded.inc()
    return exc


async def score_image(
    services: Services,
    model: LoadedModel,
    data: bytes,
    caller: Caller,
    route: str = "primary",
    paired_id: str | None = None,
) -> Prediction:
    scored = await _admitted(services, model, data, caller, route, paired_id, explain=False)
    return scored.prediction


async def explain_image(
    services: Services, model: LoadedModel, data: bytes, caller: Caller, overlay: bool
) -> tuple[Prediction, Evidence, bytes | None]:
    """Score one image and say why: its evidence map and, if asked, the map over the photo."""
    try:
        weight, bias = model.bundle.head()
    except BundleError as exc:  # the message names no server path: clients see it
        raise ExplanationUnavailable(
            f"model {model.name} {model.version} does not ship its head's weights; an operator "
            "can add them with `ai-photo-detector optimize BUNDLE`"
        ) from exc
    scored = await _admitted(services, model, data, caller, "primary", None, explain=True)
    features = scored.result.features
    assert features is not None
    manifest, view = model.bundle.manifest, scored.prepared.view

    def explain() -> tuple[Evidence, bytes | None]:
        found = evidence(features, weight, bias, manifest)
        return found, overlay_jpeg(view, found.grid) if overlay else None

    found, picture = await asyncio.get_running_loop().run_in_executor(services.decode_pool, explain)
    return scored.prediction, found, picture


@dataclass
class _Scored:
    prediction: Prediction
    prepared: Prepared
    result: EngineResult


async def _admitted(
    services: Services,
    model: LoadedModel,
    data: bytes,
    caller: Caller,
    route: str,
    paired_id: str | None,
    explain: bool,
) -> _Scored:
    try:
        ticket = model.batcher.admit()
    except Overloaded as exc:
        raise overloaded(services, exc) from exc
    try:
        return await _decode_and_infer(
            services, model, data, ticket, caller, route, paired_id, explain
        )
    finally:
        model.batcher.release(ticket)


async def _decode_and_infer(
    services: Services,
    model: LoadedModel,
    data: bytes,
    ticket: Ticket,
    caller: Caller,
    route: str,
    paired_id: str | None,
    explain: bool,
) -> _Scored:
    manifest = model.bundle.manifest
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        prepared = await loop.run_in_executor(
            services.decode_pool,
            prepare,
            data,
            manifest.preprocessing,
            services.models.limits,
            services.side_pool,
            services.spare_time,
            model.batcher,
            explain,
        )
    except ImageError as exc:
        raise image_error(services, exc) from exc
    preprocess_ms = (time.perf_counter() - started) * 1000
    result = prepared.result
    if result is not None:  # inferred on the decode thread: its time is not preprocessing
        preprocess_ms -= result.inference_ms + result.queue_ms
    else:
        try:
            result = await model.batcher.submit(prepared.array, ticket)
        except Overloaded as exc:
            raise overloaded(services, exc) from exc
        finally:
            services.metrics.queue_depth.labels(model.name).set(model.batcher.depth)
    embedding = np.asarray(result.embedding)[None, :]
    verdict = verdicts(
        np.asarray(result.logits)[None, :], manifest, model.detector.unfamiliar(embedding)
    )[0]
    info = prepared.decoded.info
    prediction = Prediction(
        prediction_id=uuid.uuid4().hex,
        label=verdict.label,
        band=verdict.band,
        probability=verdict.probability,
        scores=verdict.scores,
        reasons=list(verdict.reasons),
        model=ModelRef(name=model.name, version=model.version),
        timing=Timing(
            queue_ms=result.queue_ms,
            preprocess_ms=preprocess_ms,
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
    if route == "primary":  # shadow work is kept out of the client-facing metrics
        _observe(services, model, prediction, result)
    if services.prediction_log is not None:
        # The row's drift statistics are measured after the answer, while a later decode
        # leaves a core spare.
        services.prediction_log.submit_later(
            partial(
                _record,
                services,
                model,
                prediction,
                prepared,
                result,
                caller,
                data,
                route,
                paired_id,
                datetime.now(UTC),
            ),
            services.spare_time,
        )
    return _Scored(prediction, prepared, result)


def _observe(
    services: Services, model: LoadedModel, prediction: Prediction, result: EngineResult
) -> None:
    metrics = services.metrics
    metrics.predictions.labels(model.name, model.version, prediction.label, prediction.band).inc()
    metrics.score.labels(model.name).observe(prediction.probability)
    metrics.image_bytes.observe(prediction.image.bytes)
    metrics.image_pixels.observe(prediction.image.width * prediction.image.height)
    metrics.preprocess_seconds.observe(prediction.timing.preprocess_ms / 1000)
    metrics.queue_seconds.observe(result.queue_ms / 1000)
    metrics.inference_seconds.observe(result.inference_ms / 1000)
    metrics.batch_size.observe(result.batch_size)


def _record(
    services: Services,
    model: LoadedModel,
    prediction: Prediction,
    prepared: Prepared,
    result: EngineResult,
    caller: Caller,
    data: bytes,
    route: str,
    paired_id: str | None,
    created_at: datetime,
) -> PredictionRecord:
    stats = image_statistics(prepared.view, prepared.decoded.info.jpeg_quality)
    return PredictionRecord(
        id=prediction.prediction_id,
        created_at=created_at,
        request_id=caller.request_id,
        api_key_id=caller.api_key_id,
        model_name=model.name,
        model_version=model.version,
        route=route,
        label=prediction.label,
        band=prediction.band,
        reasons=",".join(prediction.reasons),
        score=prediction.probability,
        queue_ms=prediction.timing.queue_ms,
        preprocess_ms=prediction.timing.preprocess_ms,
        inference_ms=prediction.timing.inference_ms,
        image_sha256=prediction.image.sha256,
        width=prediction.image.width,
        height=prediction.image.height,
        format=prediction.image.format,
        bytes=prediction.image.bytes,
        brightness=stats["brightness"],
        contrast=stats["contrast"],
        saturation=stats["saturation"],
        sharpness=stats["sharpness"],
        jpeg_quality=stats["jpeg_quality"],
        embedding=np.asarray(result.embedding, dtype="<f2").tobytes(),
        image_data=data if services.settings.prediction_log.store_images else None,
        paired_id=paired_id,
    )
