"""The one helper behind every periodic loop: failures back off, a success resets the wait."""

from __future__ import annotations

import asyncio

from ai_photo_detector.serving.periodic import Periodic


def test_failed_rounds_back_off_and_a_success_resets_the_wait() -> None:
    outcomes = [False, False, True, True]
    waits: list[float] = []
    finished = asyncio.Event()

    async def scenario() -> Periodic:
        async def work() -> None:
            waits.append(periodic.next_wait_s)  # the wait that preceded this round
            if not outcomes:
                finished.set()
                return
            if not outcomes.pop(0):
                raise ConnectionError("registry unreachable")

        periodic = Periodic("test", 0.01, work, max_backoff=8)
        periodic.start()
        await asyncio.wait_for(finished.wait(), timeout=10)
        await periodic.stop()
        return periodic

    periodic = asyncio.run(scenario())
    assert waits[:4] == [0.01, 0.02, 0.04, 0.01]
    assert periodic.failures == 0


def test_backoff_is_capped() -> None:
    periodic = Periodic("test", 2.0, lambda: asyncio.sleep(0), max_backoff=8)
    periodic.failures = 10
    assert periodic.next_wait_s == 16.0
