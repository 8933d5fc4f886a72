"""Retraining started by alerts: when ``retraining.on_alert`` is on, a firing drift or
live-accuracy alert starts ``ai-photo-detector retrain`` in its own process (serving never
imports the training code), one at a time and not again within the cool-down. Every start,
skip, success and failure is in the audit log. On success the new challenger is loaded and, if
``retraining.shadow_fraction`` is set, mirrored traffic starts to flow to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ai_photo_detector.persistence.alerts import AlertRecord
from ai_photo_detector.persistence.audit import last_event_at, record_event
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.serving.children import child_command
from ai_photo_detector.serving.models import CHALLENGER, ModelManager
from ai_photo_detector.serving.rollout import Rollout
from ai_photo_detector.settings import Settings

logger = logging.getLogger(__name__)
STARTED, SKIPPED, FINISHED, FAILED = (
    "retrain_started",
    "retrain_skipped",
    "retrain_finished",
    "retrain_failed",
)


class Retrainer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        models: ModelManager,
        rollout: Rollout,
        publish: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self.rollout = rollout
        self.publish = publish
        self.name = settings.registry.model_name
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _audit(self, action: str, reason: str, details: dict[str, Any]) -> None:
        record_event(
            self.store,
            action=action,
            model_name=self.name,
            version="",
            alias="",
            previous=None,
            actor="alertmanager",
            reason=reason,
            details=details,
        )

    async def on_alerts(self, alerts: list[AlertRecord]) -> str | None:
        """Start a retrain for firing alerts that call for one: 'started', 'skipped' (one is
        running, or the cool-down has not passed), or None when none calls for one."""
        config = self.settings.retraining
        if not config.on_alert:
            return None
        firing = sorted(
            {a.name for a in alerts if a.status == "firing" and a.name in config.alerts}
        )
        if not firing:
            return None
        reason = "alert " + ", ".join(firing)
        if self.running:
            await asyncio.to_thread(self._audit, SKIPPED, reason, {"why": "one is running"})
            return "skipped"
        last = await asyncio.to_thread(last_event_at, self.store, STARTED, self.name)
        cooldown = timedelta(hours=config.cooldown_hours)
        if last is not None and datetime.now(UTC) - last < cooldown:
            why = f"cool-down: the last one started at {last.isoformat()}"
            await asyncio.to_thread(self._audit, SKIPPED, reason, {"why": why})
            return "skipped"
        await asyncio.to_thread(self._audit, STARTED, reason, {"alerts": firing})
        self._task = asyncio.get_running_loop().create_task(self._run(reason), name="retrain")
        return "started"

    async def _run(self, reason: str) -> None:
        with tempfile.TemporaryDirectory(prefix="apd-retrain-") as tmp:
            folder = Path(tmp)
            report = folder / "report.json"
            command, env = child_command(
                self.settings, folder, "retrain", "--reason", reason, "--report", str(report)
            )
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *command,
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                timeout = self.settings.retraining.timeout_hours * 3600
                _, stderr = await asyncio.wait_for(self._process.communicate(), timeout)
            except TimeoutError:
                self._kill()
                await asyncio.to_thread(self._audit, FAILED, reason, {"why": "timed out"})
                return
            except asyncio.CancelledError:
                self._kill()
                raise
            outcome = json.loads(report.read_text()) if report.is_file() else None
            code = self._process.returncode
            if code != 0 or outcome is None or outcome.get("status") != "registered":
                details = {
                    "exit_code": code,
                    "outcome": outcome,
                    "stderr": stderr.decode(errors="replace")[-2000:],
                }
                await asyncio.to_thread(self._audit, FAILED, reason, details)
                return
            await self._follow(outcome)
            await asyncio.to_thread(self._audit, FINISHED, reason, outcome)

    async def _follow(self, outcome: dict[str, Any]) -> None:
        """Load the new challenger and mirror traffic to it, where the settings ask."""
        fraction = self.settings.retraining.shadow_fraction
        if fraction <= 0:
            return
        await self.models.swap(CHALLENGER, outcome["challenger"])
        self.rollout.reset()
        self.rollout.shadow_fraction = fraction
        self.publish()

    def _kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
