"""Background checks: drift on count and time windows, live accuracy; results stored and
exported as ``apd_drift_*`` and ``apd_live_*`` gauges. Also run on demand (POST /v1/drift/run).
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from ai_photo_detector.monitoring.drift import DriftConfig, Sample, detect
from ai_photo_detector.monitoring.windows import load_window, reference_sample
from ai_photo_detector.persistence.drift_history import save_report
from ai_photo_detector.persistence.feedback import live_accuracy
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.serving.metrics import ServiceMetrics
from ai_photo_detector.serving.models import LoadedModel, ModelManager
from ai_photo_detector.serving.periodic import Periodic
from ai_photo_detector.serving.rollout import Rollout
from ai_photo_detector.settings import Settings

logger = logging.getLogger(__name__)
SEVERITY_LEVEL = {"none": 0, "warning": 1, "critical": 2}


class Monitor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        models: ModelManager,
        metrics: ServiceMetrics,
        rollout: Rollout,  # the canary guard also watches the challenger's live accuracy
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.metrics = metrics
        self.rollout = rollout
        self._references: dict[tuple[str, str], Sample] = {}
        self.checks = Periodic(
            "drift and live-accuracy checks",
            settings.monitoring.interval_s,
            lambda: asyncio.to_thread(self.run_all),
        )
        config = settings.monitoring
        self.config = DriftConfig(
            alpha=config.alpha,
            psi_critical=config.psi_critical,
            pca_components=config.pca_components,
            permutations=config.permutations,
        )

    def start(self) -> None:
        if self.settings.monitoring.enabled:
            self.checks.start()

    async def stop(self) -> None:
        await self.checks.stop()

    def reference(self, model: LoadedModel) -> Sample:
        key = (model.name, model.version)
        if key not in self._references:
            self._references[key] = reference_sample(model.bundle)
        return self._references[key]

    def run_all(self) -> list[dict[str, Any]]:
        reports = []
        for model in list(self.models.models.values()):
            reports.extend(self.run_drift(model))
        self.update_live_accuracy()
        return reports

    def run_drift(self, model: LoadedModel) -> list[dict[str, Any]]:
        """Drift on the count window and the time window of one model; stored and exported."""
        config = self.settings.monitoring
        windows = {
            f"count:{config.window_count}": load_window(
                self.store, model.name, model.version, count=config.window_count
            ),
            f"time:{config.window_hours:g}h": load_window(
                self.store,
                model.name,
                model.version,
                since=datetime.now(UTC) - timedelta(hours=config.window_hours),
                limit=config.max_window,
            ),
        }
        reports = []
        for window, sample in windows.items():
            if len(sample) < config.min_window:
                report: dict[str, Any] = {
                    "drift": False,
                    "severity": "none",
                    "skipped": f"{len(sample)} predictions, fewer than {config.min_window}",
                    "window_size": len(sample),
                    "detectors": {},
                }
            else:
                report = detect(self.reference(model), sample, self.config)
            report["window"] = window
            report["id"] = save_report(self.store, model.name, model.version, window, report)
            self._export(model, window, report)
            reports.append(report)
        return reports

    def _export(self, model: LoadedModel, window: str, report: dict[str, Any]) -> None:
        metrics = self.metrics
        labels = (model.name, model.version, window)
        metrics.drift_detected.labels(*labels).set(float(report["drift"]))
        metrics.drift_severity.labels(*labels).set(SEVERITY_LEVEL[report["severity"]])
        metrics.drift_window_size.labels(*labels).set(report["window_size"])
        for detector, result in report.get("detectors", {}).items():
            metrics.drift_p_value.labels(*labels, detector).set(result["p_value"])
        for detector, statistics in report.get("statistics", {}).items():
            for statistic, value in statistics.items():
                metrics.drift_statistic.labels(*labels, detector, statistic).set(value)
        metrics.drift_runs.labels(model.name, window, report["severity"]).inc()

    def update_live_accuracy(self) -> list[dict[str, Any]]:
        since = datetime.now(UTC) - timedelta(hours=self.settings.monitoring.accuracy_window_hours)
        results = live_accuracy(self.store, since, self.settings.data.ai_label)
        for result in results:
            labels = (result.model_name, result.model_version)
            self.metrics.live_reviewed.labels(*labels).set(result.count)
            self.metrics.live_accuracy.labels(*labels).set(result.accuracy)
            challenger = self.models.challenger
            if challenger is not None and (challenger.name, challenger.version) == labels:
                self.rollout.check((result.accuracy, result.count))
            for gauge, value in (
                (self.metrics.live_precision, result.precision),
                (self.metrics.live_recall, result.recall),
            ):
                if not math.isnan(value):
                    gauge.labels(*labels).set(value)
        return [vars(result) for result in results]
