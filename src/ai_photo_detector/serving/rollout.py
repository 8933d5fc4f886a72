"""Safe rollout: canary routing, shadow mirroring and the guard that rolls a bad challenger back.

- Canary: a caller (sticky header, else API key, else client address) is hashed into [0, 1);
  below ``canary_weight`` the challenger answers. The same caller always lands on the same side.
- Shadow: a share of champion traffic, and all canary traffic in the other direction, is also
  scored by the other model in the background. The client never waits for it; a bounded number
  of mirrors run at once and the rest are dropped and counted. Pairs are logged (route
  ``shadow``, ``paired_id`` = the answered prediction) and feed disagreement and correlation.
- Guard: once the challenger answered ``min_requests``, a too high error rate, p95 latency or
  disagreement, or a too low live accuracy stops the canary, removes the challenger alias in the
  registry, records an alert and an audit event.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ai_photo_detector.persistence.alerts import AlertRecord, record_alerts
from ai_photo_detector.persistence.audit import record_event
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.serving.metrics import ServiceMetrics
from ai_photo_detector.serving.models import CHALLENGER, LoadedModel, ModelManager
from ai_photo_detector.serving.predictor import Caller, ScoredImage, Scorer
from ai_photo_detector.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class ChallengerStats:
    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    pairs: deque[tuple[str, str, float, float]] = field(default_factory=lambda: deque(maxlen=5000))

    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95)) if self.latencies_ms else 0.0

    def disagreement(self) -> float:
        return float(np.mean([a != b for a, b, _, _ in self.pairs])) if self.pairs else 0.0

    def correlation(self) -> float | None:
        if len(self.pairs) < 3:
            return None
        champion = np.asarray([p[2] for p in self.pairs])
        challenger = np.asarray([p[3] for p in self.pairs])
        if champion.std() == 0 or challenger.std() == 0:
            return None
        return float(np.corrcoef(champion, challenger)[0, 1])


class Rollout:
    def __init__(
        self,
        settings: Settings,
        models: ModelManager,
        metrics: ServiceMetrics,
        scorer: Scorer,
        store: Store,
    ) -> None:
        self.settings = settings
        self.models = models
        self.metrics = metrics
        self.scorer = scorer
        self.store = store
        config = settings.rollout
        self.canary_weight = config.canary_weight
        self.shadow_fraction = config.shadow_fraction
        self.stats = ChallengerStats()
        self.tripped: str | None = None
        self.mirrored = 0
        self.dropped = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._random = random.Random()
        self._loop = asyncio.get_running_loop()  # created in the app's lifespan

    # --- routing ---------------------------------------------------------------------------

    def bucket(self, caller_key: str) -> float:
        digest = hashlib.sha256(caller_key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def choose(self, caller_key: str) -> LoadedModel:
        models = self.models
        challenger = models.challenger
        champion = models.champion
        if champion is None:
            raise RuntimeError("no champion loaded")
        if (
            challenger is not None
            and challenger.ready
            and self.tripped is None
            and self.canary_weight > 0
            and self.bucket(caller_key) < self.canary_weight
        ):
            return challenger
        return champion

    def reset(self) -> None:
        """A new challenger starts with clean statistics and an untripped guard."""
        self.stats = ChallengerStats()
        self.tripped = None

    # --- after a request -------------------------------------------------------------------

    def answered(self, model: LoadedModel, latency_ms: float, failed: bool) -> None:
        if model.role != CHALLENGER:
            return
        self.stats.requests += 1
        self.stats.errors += int(failed)
        if not failed:
            self.stats.latencies_ms.append(latency_ms)
        self.check()

    def maybe_mirror(
        self, answered: LoadedModel, data: bytes, prediction: ScoredImage, caller: Caller
    ) -> None:
        """Score the same image with the other model in the background, if this one is picked."""
        models = self.models
        other = models.champion if answered.role == CHALLENGER else models.challenger
        if other is None or not other.ready:
            return
        if answered.role != CHALLENGER and self._random.random() >= self.shadow_fraction:
            return
        if len(self._in_flight) >= self.settings.rollout.shadow_queue:
            self.dropped += 1
            self.metrics.shadow_dropped.inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._mirror(answered, other, data, prediction, caller)
        )
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _mirror(
        self,
        answered: LoadedModel,
        other: LoadedModel,
        data: bytes,
        prediction: ScoredImage,
        caller: Caller,
    ) -> None:
        try:
            mirrored = await self.scorer.score(
                other, data, caller, route="shadow", paired_id=prediction.prediction_id
            )
        except Exception as exc:  # a failed mirror is counted, never surfaces to a client
            self.dropped += 1
            self.metrics.shadow_dropped.inc()
            if other.role == CHALLENGER:
                self.stats.requests += 1
                self.stats.errors += 1
                self.check()
            logger.debug("shadow scoring failed: %s", exc)
            return
        self.mirrored += 1
        champion, challenger = (
            (prediction, mirrored) if answered.role != CHALLENGER else (mirrored, prediction)
        )
        self.stats.pairs.append(
            (champion.label, challenger.label, champion.probability, challenger.probability)
        )
        metrics = self.metrics
        metrics.shadow_pairs.labels(
            "agree" if champion.label == challenger.label else "disagree"
        ).inc()
        metrics.shadow_disagreement.set(self.stats.disagreement())
        correlation = self.stats.correlation()
        if correlation is not None:
            metrics.shadow_correlation.set(correlation)
        self.check()

    async def drain(self, timeout: float = 10.0) -> None:
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=timeout)

    # --- the guard -------------------------------------------------------------------------

    def check(self, live_accuracy: tuple[float, int] | None = None) -> str | None:
        """Trip the guard when the challenger breaks a limit; returns the reason if tripped."""
        if self.tripped is not None or self.models.challenger is None:
            return self.tripped
        if self.canary_weight <= 0:  # shadow only observes: nothing to stop
            return None
        guard = self.settings.rollout.guard
        stats = self.stats
        reason = None
        if stats.requests >= guard.min_requests:
            error_rate = stats.errors / stats.requests
            if error_rate > guard.max_error_rate:
                reason = f"error rate {error_rate:.3f} > {guard.max_error_rate}"
            elif stats.p95_ms() > guard.max_p95_ms:
                reason = f"p95 latency {stats.p95_ms():.0f} ms > {guard.max_p95_ms:.0f} ms"
        enough_pairs = len(stats.pairs) >= guard.min_requests
        if reason is None and enough_pairs and stats.disagreement() > guard.max_disagreement:
            reason = (
                f"disagreement with the champion {stats.disagreement():.3f} > "
                f"{guard.max_disagreement}"
            )
        if reason is None and live_accuracy is not None:
            accuracy, reviewed = live_accuracy
            if reviewed >= guard.min_feedback and accuracy < guard.min_live_accuracy:
                reason = f"live accuracy {accuracy:.3f} < {guard.min_live_accuracy}"
        if reason is not None:
            self.trip(reason)
        return self.tripped

    def trip(self, reason: str) -> None:
        challenger = self.models.challenger
        assert challenger is not None
        self.tripped = reason
        self.canary_weight = 0.0
        self.metrics.canary_rollbacks.inc()
        self.metrics.canary_weight.set(0.0)
        logger.warning("canary guard tripped for %s: %s", challenger.key, reason)
        # The guard may trip on the event loop (a request) or in the monitor's thread.
        self._loop.call_soon_threadsafe(
            lambda: self._loop.create_task(asyncio.to_thread(self._record, challenger, reason))
        )

    def _record(self, challenger: LoadedModel, reason: str) -> None:
        """Revert the registry alias, raise an alert and write the audit event."""
        reverted = None
        reference = challenger.reference
        if reference.startswith("models:/") and reference.endswith(f"@{CHALLENGER}"):
            try:
                from ai_photo_detector.registry.registry import Registry, parse_reference

                name, _ = parse_reference(reference)
                registry = Registry(self.settings, self.store, name=name)
                reverted = registry.remove_alias(
                    CHALLENGER, f"canary guard: {reason}", "canary-guard"
                )
            except Exception:  # the canary is already stopped; the alias is reported below
                logger.exception("could not remove the challenger alias")
        alert = AlertRecord(
            name="APDCanaryRolledBack",
            status="firing",
            severity="critical",
            starts_at=datetime.now(UTC).isoformat(),
            labels={"model": challenger.name, "version": challenger.version},
            annotations={"summary": f"canary of {challenger.key} stopped: {reason}"},
        )
        record_alerts(self.store, [alert])
        if reverted is None:  # registry-backed challengers are audited by the registry
            record_event(
                self.store,
                action="canary_rollback",
                model_name=challenger.name,
                version=challenger.version,
                alias=CHALLENGER,
                previous=None,
                actor="canary-guard",
                reason=reason,
                details={"reference": reference},
            )

    def status(self) -> dict[str, Any]:
        models = self.models
        stats = self.stats
        return {
            "champion": _ref(models.champion),
            "challenger": _ref(models.challenger),
            "canary": {"weight": self.canary_weight, "tripped": self.tripped},
            "shadow": {
                "fraction": self.shadow_fraction,
                "mirrored": self.mirrored,
                "dropped": self.dropped,
                "in_flight": len(self._in_flight),
            },
            "challenger_stats": {
                "requests": stats.requests,
                "errors": stats.errors,
                "error_rate": stats.errors / stats.requests if stats.requests else 0.0,
                "p95_ms": stats.p95_ms(),
                "pairs": len(stats.pairs),
                "disagreement": stats.disagreement(),
                "score_correlation": stats.correlation(),
            },
        }


def _ref(model: LoadedModel | None) -> dict[str, str | None] | None:
    if model is None:
        return None
    return {
        "name": model.name,
        "version": model.version,
        "reference": model.public_reference,
        "registry_version": model.registry_version,
    }
