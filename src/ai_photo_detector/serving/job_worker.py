"""The embedded default works jobs off beside the service, in a child process at idle CPU
priority: `make run` scores jobs with nothing else to start, and interactive requests keep
their latency. (Threads in the service's own process were tried first: at the lowest priority
they still held Python's lock while descheduled, and /v1/predict's p95 rose 8-fold.)

The child is ``ai-photo-detector worker --idle`` with the service's settings; it is restarted
when it dies (its chunks are re-leased by the reaper) and stopped with the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from pathlib import Path

from ai_photo_detector.serving.children import child_command
from ai_photo_detector.settings import Settings

logger = logging.getLogger(__name__)


class WorkerProcess:
    def __init__(
        self, settings: Settings, restart_after_s: float = 2.0, start_after_s: float = 1.0
    ) -> None:
        self.settings = settings
        self.restart_after_s = restart_after_s
        self.start_after_s = start_after_s  # the service gets ready first, on every core
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._folder = tempfile.TemporaryDirectory(prefix="apd-worker-")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="job worker")

    async def _supervise(self) -> None:
        command, env = child_command(self.settings, Path(self._folder.name), "worker", "--idle")
        await asyncio.sleep(self.start_after_s)
        while True:
            self.process = await asyncio.create_subprocess_exec(
                *command, env=env, stdout=asyncio.subprocess.DEVNULL
            )
            code = await self.process.wait()
            self.restarts += 1
            logger.error("the job worker exited (%s); restarting it", code)
            await asyncio.sleep(self.restart_after_s)

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: the worker finishes its chunks in progress (or they are re-leased)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._folder.cleanup()
