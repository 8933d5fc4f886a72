"""Score one uploaded image: admission, decode off the loop, micro-batched inference, the
calibrated answer, metrics and the prediction log row.

The scoring core: it returns a :class:`ScoredImage` and raises :mod:`ai_photo_detector.errors`;
it knows nothing of HTTP (``serving/api`` turns both into responses).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ai_photo_detector.errors import ExplanationUnavailable, Overloaded
from ai_photo_detector.ids import new_id
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
from ai_photo_detector.model.bundle import BundleError
from ai_photo_detector.model.explain import Evidence, evidence, overlay_jpeg
from ai_photo_detector.model.inference import BatchOutput
from ai_photo_detector.persistence.predictions import PredictionLog, PredictionRecord
from ai_photo_detector.serving.engine import EngineResult, MicroBatcher, Ticket
from ai_photo_detector.serving.metrics import ServiceMetrics
from ai_photo_detector.serving.models import LoadedModel
from ai_photo_detector.serving.spare_time import SpareTimeExecutor


@dataclass(frozen=True)
class Caller:
    request_id: str
    api_key_id: str | None


@dataclass(frozen=True)
class Timing:
    queue_ms: float  # waiting for a micro-batch
    preprocess_ms: float  # decode and preprocess
    inference_ms: float  # model inference of the batch


@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    format: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ScoredImage:
    """One image's calibrated verdict, as logged and answered."""

    prediction_id: str
    label: str
    band: str
    probability: float
    scores: dict[str, float]
    reasons: list[str]
    model_name: str
    model_version: str
    timing: Timing
    image: ImageFacts
    provenance: dict[str, Any] | None = None  # what the file's metadata says of its origin
    model_label: str = ""  # the model's own label: differs from ``label`` only by policy


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


class Scorer:
    """Scores images with any loaded model; built once, from the narrow things it uses."""

    def __init__(
        self,
        *,
        limits: DecodeLimits,
        metrics: ServiceMetrics,
        decode_pool: Executor,
        side_pool: Executor,
        spare_time: SpareTimeExecutor,
        prediction_log: PredictionLog | None,
        store_images: bool,
        region: str | None = None,
    ) -> None:
        self.region = region  # tags the ids of the predictions made here
        self.limits = limits
        self.metrics = metrics
        self.decode_pool = decode_pool
        self.side_pool = side_pool
        self.spare_time = spare_time
        self.prediction_log = prediction_log
        self.store_images = store_images

    def refuse_overloaded(self) -> Overloaded:
        """A counted refusal for lack of room, to raise before any work is spent."""
        self.metrics.overloaded.inc()
        return Overloaded("the inference queue is full")

    async def score(
        self,
        model: LoadedModel,
        data: bytes,
        caller: Caller,
        route: str = "primary",
        paired_id: str | None = None,
    ) -> ScoredImage:
        scored = await self._admitted(model, data, caller, route, paired_id, explain=False)
        return scored.image

    async def explain(
        self,
        model: LoadedModel,
        data: bytes,
        caller: Caller,
        overlay: bool,
        route: str = "primary",
    ) -> tuple[ScoredImage, Evidence, bytes | None]:
        """Score one image and say why: its evidence map and, if asked, the map over the
        photo. Route ``review`` re-explains a logged image for a reviewer: neither logged nor
        counted as a client's prediction."""
        _head(model.current())  # refused before any work is spent
        scored = await self._admitted(model, data, caller, route, None, explain=True)
        weight, bias = _head(scored.model)
        features = scored.result.features
        assert features is not None
        manifest, view = scored.model.bundle.manifest, scored.prepared.view

        def explain() -> tuple[Evidence, bytes | None]:
            found = evidence(features, weight, bias, manifest)
            return found, overlay_jpeg(view, found.grid) if overlay else None

        found, picture = await asyncio.get_running_loop().run_in_executor(self.decode_pool, explain)
        return scored.image, found, picture

    async def _admitted(
        self,
        model: LoadedModel,
        data: bytes,
        caller: Caller,
        route: str,
        paired_id: str | None,
        explain: bool,
    ) -> _Scored:
        model = model.current()  # swapped out while the request was read: its successor
        try:
            ticket = model.batcher.admit()
        except Overloaded:
            raise self.refuse_overloaded() from None
        try:
            return await self._decode_and_infer(
                model, data, ticket, caller, route, paired_id, explain
            )
        finally:
            model.batcher.release(ticket)

    async def _decode_and_infer(
        self,
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
                self.decode_pool,
                prepare,
                data,
                manifest.preprocessing,
                self.limits,
                self.side_pool,
                self.spare_time,
                model.batcher,
                explain,
            )
        except ImageError as exc:
            self.metrics.input_errors.labels(exc.code).inc()
            raise
        preprocess_ms = (time.perf_counter() - started) * 1000
        result = prepared.result
        if result is not None:  # inferred on the decode thread: its time is not preprocessing
            preprocess_ms -= result.inference_ms + result.queue_ms
        else:
            try:
                result = await model.batcher.submit(prepared.array, ticket)
            except Overloaded:
                raise self.refuse_overloaded() from None
            finally:
                self.metrics.queue_depth.labels(model.name).set(model.batcher.depth)
        output = BatchOutput(result.logits[None, :], result.embedding[None, :])
        info = prepared.decoded.info
        verdict = model.detector.verdicts(output, [info.provenance])[0]
        image = ScoredImage(
            prediction_id=new_id(self.region),
            label=verdict.label,
            band=verdict.band,
            probability=verdict.probability,
            scores=verdict.scores,
            reasons=list(verdict.reasons),
            model_name=model.name,
            model_version=model.version,
            timing=Timing(
                queue_ms=result.queue_ms,
                preprocess_ms=preprocess_ms,
                inference_ms=result.inference_ms,
            ),
            image=ImageFacts(
                width=info.width,
                height=info.height,
                format=info.format,
                bytes=info.bytes,
                sha256=info.sha256,
            ),
            provenance=info.provenance.as_dict() if info.provenance is not None else None,
            model_label=verdict.model_label or verdict.label,
        )
        if route == "primary":  # shadow work is kept out of the client-facing metrics
            self._observe(model, image, result)
        log = self.prediction_log
        if log is not None and route != "review":
            build = partial(
                self._record,
                model,
                image,
                prepared,
                result,
                caller,
                data,
                route,
                paired_id,
                datetime.now(UTC),
            )
            if log.durable:  # the row is in the spool before the answer leaves
                await loop.run_in_executor(self.spare_time, log.submit_built, build)
            else:  # measured after the answer, while a later decode leaves a core spare
                log.submit_later(build, self.spare_time)
        return _Scored(image, prepared, result, model)

    def _observe(self, model: LoadedModel, image: ScoredImage, result: EngineResult) -> None:
        metrics = self.metrics
        metrics.predictions.labels(model.name, model.version, image.label, image.band).inc()
        metrics.score.labels(model.name).observe(image.probability)
        metrics.image_bytes.observe(image.image.bytes)
        metrics.image_pixels.observe(image.image.width * image.image.height)
        metrics.preprocess_seconds.observe(image.timing.preprocess_ms / 1000)
        metrics.queue_seconds.observe(result.queue_ms / 1000)
        metrics.inference_seconds.observe(result.inference_ms / 1000)
        metrics.batch_size.observe(result.batch_size)

    def _record(
        self,
        model: LoadedModel,
        image: ScoredImage,
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
            id=image.prediction_id,
            created_at=created_at,
            request_id=caller.request_id,
            api_key_id=caller.api_key_id,
            model_name=model.name,
            model_version=model.version,
            route=route,
            label=image.label,
            model_label=image.model_label,
            band=image.band,
            reasons=",".join(image.reasons),
            score=image.probability,
            queue_ms=image.timing.queue_ms,
            preprocess_ms=image.timing.preprocess_ms,
            inference_ms=image.timing.inference_ms,
            image_sha256=image.image.sha256,
            width=image.image.width,
            height=image.image.height,
            format=image.image.format,
            bytes=image.image.bytes,
            brightness=stats["brightness"],
            contrast=stats["contrast"],
            saturation=stats["saturation"],
            sharpness=stats["sharpness"],
            jpeg_quality=stats["jpeg_quality"],
            embedding=np.asarray(result.embedding, dtype="<f2").tobytes(),
            image_data=data if self.store_images else None,
            paired_id=paired_id,
            provenance=image.provenance,
        )


def _head(model: LoadedModel) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    try:
        return model.bundle.head()
    except BundleError as exc:  # the message names no server path: clients see it
        raise ExplanationUnavailable(
            f"model {model.name} {model.version} does not ship its head's weights; an "
            "operator can add them with `ai-photo-detector optimize BUNDLE`"
        ) from exc


@dataclass
class _Scored:
    image: ScoredImage
    prepared: Prepared
    result: EngineResult
    model: LoadedModel  # the model that answered (a swapped-out one's successor)
