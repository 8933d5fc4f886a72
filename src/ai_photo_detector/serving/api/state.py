"""Everything a request handler needs, created once per app and reached through dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ai_photo_detector.errors import StoreUnavailable
from ai_photo_detector.monitoring.prediction_log import PredictionLog
from ai_photo_detector.monitoring.store import Store
from ai_photo_detector.serving.api.ratelimit import RateLimiter

if TYPE_CHECKING:
    from ai_photo_detector.serving.monitor import Monitor
    from ai_photo_detector.serving.rollout import Rollout
from ai_photo_detector.serving.metrics import ServiceMetrics
from ai_photo_detector.serving.models import CHALLENGER, CHAMPION, ModelManager
from ai_photo_detector.serving.predictor import Scorer
from ai_photo_detector.serving.spare_time import SpareTimeExecutor
from ai_photo_detector.serving.warm_pool import WarmThreadPool
from ai_photo_detector.settings import Settings


@dataclass
class Services:
    settings: Settings
    models: ModelManager
    metrics: ServiceMetrics
    decode_pool: WarmThreadPool
    side_pool: WarmThreadPool  # work beside each decode: the markup scan
    spare_time: SpareTimeExecutor  # work after the answer: the prediction log's rows
    rate_limiter: RateLimiter
    scorer: Scorer
    store: Store | None = None
    prediction_log: PredictionLog | None = None
    monitor: Monitor | None = None
    rollout: Rollout | None = None
    draining: bool = False
    startup_error: str | None = field(default=None)

    def require_store(self) -> Store:
        """The store, or a clear 503 where the service runs without one."""
        if self.store is None:
            raise StoreUnavailable("the prediction store is not configured")
        return self.store


def publish_models(services: Services) -> None:
    """Model info and readiness gauges, per role; called at start, reload and stop."""
    metrics = services.metrics
    for role in (CHAMPION, CHALLENGER):
        model = services.models.roles.get(role)
        if model is None:
            continue
        manifest = model.bundle.manifest
        metrics.model_info.labels(role, model.name).info(
            {
                "version": manifest.version,
                "backbone": manifest.backbone,
                "labels": ",".join(manifest.labels),
            }
        )
        metrics.model_ready.labels(role, model.name).set(float(model.ready))
    metrics.canary_weight.set(services.rollout.canary_weight if services.rollout else 0.0)
