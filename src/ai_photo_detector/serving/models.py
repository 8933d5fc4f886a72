"""Loaded models by role (champion, challenger) and name, with hot reload.

A reload builds and warms the new model off the event loop, then swaps it in; requests already
holding the old model finish on it, and its batcher stops once they are done. A failed load
(bad checksum, wrong schema, unreadable file, unknown alias) leaves the old model serving.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ai_photo_detector.errors import ModelNotFound, ReloadFailed
from ai_photo_detector.imaging import upload_limits
from ai_photo_detector.model.bundle import Bundle
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.model.runtimes import requested_runtime
from ai_photo_detector.registry.registry import resolve_bundle
from ai_photo_detector.serving.engine import MicroBatcher
from ai_photo_detector.settings import Settings

logger = logging.getLogger(__name__)
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class LoadedModel:
    name: str
    bundle: Bundle
    detector: OnnxDetector
    batcher: MicroBatcher
    reference: str
    role: str
    ready: bool = False
    registry_version: str | None = None  # models:/NAME/VERSION it was resolved to, if any
    # The model swapped in for this one: a request that picked this one before the swap (and
    # was still reading its upload) is answered by the successor, never by a stopped batcher.
    successor: LoadedModel | None = None

    def current(self) -> LoadedModel:
        """This model, or the one now serving in its place."""
        model = self
        while model.successor is not None:
            model = model.successor
        return model

    @property
    def version(self) -> str:
        return self.bundle.manifest.version

    @property
    def public_reference(self) -> str | None:
        """What it was loaded from, for clients: a registry reference; never a server path."""
        return self.reference if self.registry_version is not None else None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


class ReloadError(ReloadFailed):
    """A model that could not be loaded; the one serving before keeps serving."""


class ModelManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.roles: dict[str, LoadedModel] = {}
        self.started = False
        self._retiring: set[asyncio.Task[None]] = set()
        self.limits = upload_limits(settings)

    # --- lookup ----------------------------------------------------------------------------

    @property
    def models(self) -> dict[str, LoadedModel]:
        """Loaded models by public name (``name@version`` when two share a name)."""
        named: dict[str, LoadedModel] = {}
        for role in (CHAMPION, CHALLENGER):
            model = self.roles.get(role)
            if model is not None:
                named[model.name if model.name not in named else model.key] = model
        return named

    @property
    def default_name(self) -> str | None:
        champion = self.roles.get(CHAMPION)
        return champion.name if champion else None

    def get(self, name: str | None) -> LoadedModel:
        if name is None or name == CHAMPION:
            model = self.roles.get(CHAMPION)
        elif name == CHALLENGER:
            model = self.roles.get(CHALLENGER)
        else:
            model = self.models.get(name) or next(
                (m for m in self.roles.values() if m.key == name), None
            )
        if model is None:
            raise ModelNotFound(f"no model named {name!r} is loaded")
        return model

    @property
    def champion(self) -> LoadedModel | None:
        return self.roles.get(CHAMPION)

    @property
    def challenger(self) -> LoadedModel | None:
        return self.roles.get(CHALLENGER)

    @property
    def ready(self) -> bool:
        return CHAMPION in self.roles and all(m.ready for m in self.roles.values())

    # --- loading ---------------------------------------------------------------------------

    def build(self, reference: str, role: str) -> LoadedModel:
        """Resolve, verify, open and warm up a model (blocking: call it off the event loop)."""
        resolved = resolve_bundle(reference, self.settings)
        bundle = resolved.bundle
        inference = self.settings.inference
        threads = (inference.intra_op_threads, inference.inter_op_threads)
        runtime = requested_runtime(inference.runtime)
        spinning = inference.spinning
        if spinning == "adaptive":
            # Batches (the server is busy) on threads that never spin, so decoding keeps its
            # cores; a lone image on a second session that spins during its run. OpenVINO's
            # threads do not spin: one session serves both.
            detector = OnnxDetector(bundle, *threads, "never", runtime=runtime)
            solo = detector
            if detector.spins:
                solo = OnnxDetector(bundle, *threads, "during_run", lanes=False, runtime=runtime)
                solo.warm_up()
        else:
            detector = solo = OnnxDetector(bundle, *threads, spinning, runtime=runtime)
        detector.warm_up()
        server = self.settings.server
        batcher = MicroBatcher(
            detector,
            max_batch_size=server.max_batch_size,
            max_delay_s=server.max_queue_delay_ms / 1000,
            max_queue=server.max_queue_size,
            solo=solo,
        )
        return LoadedModel(
            bundle.manifest.name,
            bundle,
            detector,
            batcher,
            reference,
            role,
            registry_version=resolved.registry_version,
        )

    def load(self, reference: str, role: str = CHAMPION) -> LoadedModel:
        """Load at start-up (before the event loop serves requests)."""
        model = self.build(reference, role)
        self.roles[role] = model
        return model

    def start(self) -> None:
        self.started = True
        for model in self.roles.values():
            model.batcher.start()
            model.ready = True

    async def stop(self) -> None:
        for model in self.roles.values():
            model.ready = False
            await model.batcher.stop()
        for task in list(self._retiring):
            task.cancel()

    async def swap(self, role: str, reference: str) -> dict[str, str | None]:
        """Load ``reference`` for ``role`` and swap it in; returns what was and what is now
        served (bundle versions, and registry versions where they came from a registry)."""
        try:
            model = await asyncio.to_thread(self.build, reference, role)
        except Exception as exc:  # any failure keeps the old model serving
            raise ReloadError(f"{role} {reference}: {exc}") from exc
        old = self.roles.get(role)
        model.batcher.start()
        model.ready = True
        self.roles[role] = model
        if old is not None:
            old.successor = model
            self._retire(old)
        return {
            "from": old.version if old else None,
            "to": model.version,
            "from_registry": old.registry_version if old else None,
            "to_registry": model.registry_version,
        }

    def remove(self, role: str) -> LoadedModel | None:
        old = self.roles.pop(role, None)
        if old is not None:
            self._retire(old)
        return old

    def _retire(self, model: LoadedModel) -> None:
        """Stop an old model's batcher once the requests already holding it are answered."""

        async def drain() -> None:
            for _ in range(600):
                if model.batcher.pending == 0:
                    break
                await asyncio.sleep(0.05)
            model.ready = False
            await model.batcher.stop()

        task = asyncio.get_running_loop().create_task(drain())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _moved(self) -> list[str]:
        """Roles whose models:/ alias now points at another version than the one loaded."""
        from ai_photo_detector.registry.registry import REFERENCE_PREFIX, Registry, parse_reference

        moved = []
        for role, model in self.roles.items():
            if not model.reference.startswith(REFERENCE_PREFIX):
                continue
            name, alias = parse_reference(model.reference)
            current = Registry(self.settings, name=name).resolve(alias)
            if model.registry_version != f"{REFERENCE_PREFIX}{name}/{current}":
                moved.append(role)
        return moved

    async def follow_aliases(self) -> None:
        """Reload each role whose registry alias moved (one round of alias polling; a failure
        keeps the current models)."""
        for role in await asyncio.to_thread(self._moved):
            await self.swap(role, self.roles[role].reference)

    async def reload(self) -> dict[str, dict[str, str | None]]:
        """Re-resolve every role's reference (aliases may have moved) and swap what changed."""
        changes: dict[str, dict[str, str | None]] = {}
        for role, model in list(self.roles.items()):
            changes[role] = await self.swap(role, model.reference)
        return changes
