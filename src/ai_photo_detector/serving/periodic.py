"""Background work repeated at an interval: one helper for every periodic loop of the service.

A failed round is logged and the next one waits longer (doubling, up to ``max_backoff`` times
the interval), so an unreachable dependency (the registry, the store) is not hammered; a round
that succeeds resets the wait. The work runs on the event loop and hands blocking parts to a
thread itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


class Periodic:
    def __init__(
        self,
        name: str,
        interval_s: float,
        work: Callable[[], Awaitable[object]],
        max_backoff: int = 8,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.work = work
        self.max_backoff = max_backoff
        self.failures = 0  # consecutive failed rounds
        self._task: asyncio.Task[None] | None = None

    @property
    def next_wait_s(self) -> float:
        return self.interval_s * min(2.0**self.failures, float(self.max_backoff))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.next_wait_s)
            try:
                await self.work()
            except Exception:  # the service keeps running; the next round tries again, later
                self.failures += 1
                logger.exception(
                    "%s failed (%d in a row); next try in %.1f s",
                    self.name,
                    self.failures,
                    self.next_wait_s,
                )
            else:
                self.failures = 0
