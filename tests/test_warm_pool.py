"""The decode pool: the thread that went idle last takes the next job; nothing is lost."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ai_photo_detector.serving.warm_pool import WarmThreadPool


def _wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _thread_name() -> str:
    return threading.current_thread().name


def test_the_last_thread_to_go_idle_takes_the_next_job() -> None:
    pool = WarmThreadPool(2, "decode")
    gates = [threading.Event(), threading.Event()]

    def held(i: int) -> str:
        gates[i].wait(5)
        return _thread_name()

    first, second = pool.submit(held, 0), pool.submit(held, 1)
    gates[0].set()
    first_thread = first.result(timeout=5)
    _wait_for(lambda: len(pool._idle) == 1)
    gates[1].set()
    second_thread = second.result(timeout=5)
    _wait_for(lambda: len(pool._idle) == 2)
    assert {first_thread, second_thread} == {"decode_0", "decode_1"}
    # Lone jobs now all go to the thread that finished last, not in turn.
    assert [pool.submit(_thread_name).result(timeout=5) for _ in range(5)] == [second_thread] * 5
    pool.shutdown()


def test_jobs_beyond_the_threads_wait_their_turn_and_all_run() -> None:
    pool = WarmThreadPool(2, "decode")
    running = threading.Semaphore(0)
    release = threading.Event()
    active, most = 0, 0
    lock = threading.Lock()

    def job(i: int) -> int:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        running.release()
        release.wait(5)
        with lock:
            active -= 1
        return i * i

    futures = [pool.submit(job, i) for i in range(10)]
    assert running.acquire(timeout=5) and running.acquire(timeout=5)
    assert not running.acquire(timeout=0.1)  # a third job waits: two threads at most
    release.set()
    assert [f.result(timeout=5) for f in futures] == [i * i for i in range(10)]
    assert most == 2
    pool.shutdown()


def test_shutdown_runs_the_backlog_then_refuses_and_joins() -> None:
    pool = WarmThreadPool(1, "decode")
    release = threading.Event()
    done: list[int] = []
    blocking = pool.submit(release.wait, 5)
    queued = [pool.submit(done.append, i) for i in range(3)]
    closer = threading.Thread(target=pool.shutdown)
    closer.start()
    release.set()
    closer.join(5)
    assert not closer.is_alive()
    assert blocking.result(timeout=0) is True and all(f.done() for f in queued)
    assert done == [0, 1, 2]
    with pytest.raises(RuntimeError):
        pool.submit(done.append, 4)
    assert not any(worker.thread.is_alive() for worker in pool._workers)


def test_shutdown_can_cancel_the_backlog() -> None:
    pool = WarmThreadPool(1, "decode")
    release = threading.Event()
    running = pool.submit(release.wait, 5)
    waiting = pool.submit(_thread_name)
    closer = threading.Thread(target=pool.shutdown, kwargs={"cancel_futures": True})
    closer.start()
    _wait_for(lambda: waiting.cancelled())
    release.set()
    closer.join(5)
    assert running.result(timeout=0) is True


def test_errors_reach_the_caller_and_asyncio_can_use_the_pool() -> None:
    pool = WarmThreadPool(2, "decode")

    def broken() -> None:
        raise ValueError("corrupt image")

    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError, match="corrupt image"):
            await loop.run_in_executor(pool, broken)
        return await loop.run_in_executor(pool, _thread_name)

    assert asyncio.run(scenario()).startswith("decode_")
    pool.shutdown()


def test_no_job_is_lost_when_hand_offs_race_with_workers_going_idle() -> None:
    """Submitters racing workers that are just going idle (thread switches forced as often as
    possible): every job runs and every worker survives."""
    import sys

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(8):
            _race_round()
    finally:
        sys.setswitchinterval(interval)


def _race_round() -> None:
    pool = WarmThreadPool(3, "decode")
    futures: list[object] = []
    lock = threading.Lock()

    def submitter(offset: int) -> None:
        for i in range(300):
            future = pool.submit(int, offset + i)
            with lock:
                futures.append(future)
            if i % 7 == 0:
                time.sleep(0)  # let workers drain and go idle between bursts

    threads = [threading.Thread(target=submitter, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = sorted(f.result(timeout=10) for f in futures)  # type: ignore[attr-defined]
    assert results == sorted(k * 1000 + i for k in range(4) for i in range(300))
    assert all(worker.thread.is_alive() for worker in pool._workers)
    pool.shutdown()
    assert not any(worker.thread.is_alive() for worker in pool._workers)
