"""A thread pool that hands each job to the thread that went idle last.

``ThreadPoolExecutor`` wakes whichever idle worker the OS picks, so once a burst has started
all its workers, lone requests alternate between threads; a lone image is also inferred on its
decode thread, and alternating callers made single requests measurably slower after a burst
(two servers side by side: -4 % at concurrency 1). Last-in-first-out keeps one thread, its
caches and its place among the inference threads, busy at low load, and still uses every
thread under load.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TypeVar

from ai_photo_detector.serving.calls import Job, P, cancel_all, new_job, run_job

T = TypeVar("T")


class _Worker:
    def __init__(self, pool: WarmThreadPool, first: Job, name: str) -> None:
        self.pool = pool
        # Its own inbox: a job handed over before the worker is back waiting is kept, not lost.
        self.inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.inbox.put(first)
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.thread.start()

    def hand(self, job: Job | None) -> None:
        """Give the idle worker its next job (None: stop)."""
        self.inbox.put(job)

    def run(self) -> None:
        while (job := self.inbox.get()) is not None:  # None: shutdown() stops an idle worker
            while job is not None:
                run_job(job)
                job, alive = self.pool._next_job(self)
                if not alive:
                    return


class WarmThreadPool(Executor):
    def __init__(self, max_workers: int, thread_name_prefix: str = "warm") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self.prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the last to go idle is woken first
        self._workers: list[_Worker] = []
        self._backlog: deque[Job] = deque()
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future, job = new_job(fn, *args, **kwargs)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new jobs after shutdown")
            if self._idle:
                self._idle.pop().hand(job)
            elif len(self._workers) < self.max_workers:
                name = f"{self.prefix}_{len(self._workers)}"
                self._workers.append(_Worker(self, job, name))
            else:
                self._backlog.append(job)
        return future

    def _next_job(self, worker: _Worker) -> tuple[Job | None, bool]:
        """A finished worker's next job from the backlog (None: it is idle now) and whether it
        lives on (not once the pool is shut down and the backlog empty)."""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft(), True
            if self._closed:
                return None, False
            self._idle.append(worker)
            return None, True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new jobs; the backlog still runs (or is cancelled), then the threads exit."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                cancel_all(self._backlog)
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.hand(None)
        if wait:
            for worker in list(self._workers):
                worker.thread.join()
