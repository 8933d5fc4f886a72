"""Loaded models by name: bundle, ONNX Runtime session and micro-batcher."""

from __future__ import annotations

from dataclasses import dataclass

from ai_photo_detector.bundle import Bundle, load_bundle
from ai_photo_detector.imaging import DecodeLimits
from ai_photo_detector.inference import OnnxDetector
from ai_photo_detector.serving.engine import MicroBatcher
from ai_photo_detector.serving.errors import ApiError
from ai_photo_detector.settings import Settings


@dataclass
class LoadedModel:
    name: str
    bundle: Bundle
    detector: OnnxDetector
    batcher: MicroBatcher
    ready: bool = False

    @property
    def version(self) -> str:
        return self.bundle.manifest.version


class ModelManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models: dict[str, LoadedModel] = {}
        self.default_name: str | None = None
        imaging = settings.imaging
        self.limits = DecodeLimits(
            max_pixels=imaging.max_pixels,
            min_side=imaging.min_side,
            max_side=imaging.max_side,
            accepted_formats=frozenset(settings.server.accepted_formats),
            reject_markup=True,
        )

    def load(self, reference: str) -> LoadedModel:
        """Load, warm up and register a bundle; the first one loaded is the default."""
        bundle = load_bundle(reference)
        inference = self.settings.inference
        detector = OnnxDetector(bundle, inference.intra_op_threads, inference.inter_op_threads)
        detector.warm_up()
        server = self.settings.server
        batcher = MicroBatcher(
            detector,
            max_batch_size=server.max_batch_size,
            max_delay_s=server.max_queue_delay_ms / 1000,
            max_queue=server.max_queue_size,
        )
        loaded = LoadedModel(bundle.manifest.name, bundle, detector, batcher)
        self.models[loaded.name] = loaded
        if self.default_name is None:
            self.default_name = loaded.name
        return loaded

    def start(self) -> None:
        for model in self.models.values():
            model.batcher.start()
            model.ready = True

    async def stop(self) -> None:
        for model in self.models.values():
            model.ready = False
            await model.batcher.stop()

    def get(self, name: str | None) -> LoadedModel:
        key = name or self.default_name
        if key is None or key not in self.models:
            raise ApiError(404, "model_not_found", f"no model named {name!r} is loaded")
        return self.models[key]

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(m.ready for m in self.models.values())
