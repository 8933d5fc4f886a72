"""Spare-time jobs: held until a decode starts (or a timeout), run in order, never lost."""

from __future__ import annotations

import threading
import time

import pytest

from ai_photo_detector.serving.spare_time import SpareTimeExecutor


def test_jobs_wait_for_a_decode_then_run_in_order() -> None:
    spare = SpareTimeExecutor(max_delay_s=30)
    done: list[int] = []
    futures = [spare.submit(done.append, i) for i in range(3)]
    time.sleep(0.2)
    assert done == []  # no decode has started and the timeout is far away
    spare.decode_started()
    for future in futures:
        future.result(timeout=5)
    assert done == [0, 1, 2]
    spare.shutdown()


def test_jobs_run_after_the_delay_when_no_decode_comes() -> None:
    spare = SpareTimeExecutor(max_delay_s=0.02)
    assert spare.submit(lambda: 41 + 1).result(timeout=5) == 42
    spare.shutdown()


def test_shutdown_runs_queued_jobs_then_refuses_new_ones() -> None:
    spare = SpareTimeExecutor(max_delay_s=30)
    started, release = threading.Event(), threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(5)
        return "first"

    first = spare.submit(blocking)
    spare.decode_started()
    assert started.wait(5)
    queued = spare.submit(lambda: "queued")  # waits behind the running job
    closer = threading.Thread(target=spare.shutdown)
    closer.start()
    release.set()
    closer.join(5)
    assert not closer.is_alive()
    assert first.result(timeout=0) == "first" and queued.result(timeout=0) == "queued"
    with pytest.raises(RuntimeError):
        spare.submit(lambda: None)


def test_a_failing_job_reaches_its_future_and_the_worker_goes_on() -> None:
    spare = SpareTimeExecutor(max_delay_s=0.01)

    def broken() -> None:
        raise ValueError("no statistics")

    with pytest.raises(ValueError, match="no statistics"):
        spare.submit(broken).result(timeout=5)
    assert spare.submit(lambda: "still running").result(timeout=5) == "still running"
    spare.shutdown()


def test_cancelled_futures_are_skipped() -> None:
    spare = SpareTimeExecutor(max_delay_s=30)
    ran: list[str] = []
    spare.submit(ran.append, "a").cancel()
    kept = spare.submit(ran.append, "b")
    spare.shutdown(cancel_futures=False)
    assert kept.done() and ran == ["b"]
