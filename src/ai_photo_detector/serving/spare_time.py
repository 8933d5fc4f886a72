"""Work that can wait for a spare core: it runs while a decode leaves one free.

On a small box a single image's inference uses every core, and a side job running beside it
stretches every operator of the run (the run waits for its slowest thread). Decoding a photo
uses one core for milliseconds. So jobs that need not finish before the answer (the
prediction log's drift statistics) wait here until a decode begins, or ``max_delay_s`` at
most when none comes. Under load decodes begin all the time and jobs run at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TypeVar

from ai_photo_detector.serving.calls import Job, P, cancel_all, new_job, run_job

T = TypeVar("T")


class SpareTimeExecutor(Executor):
    """One thread running jobs in order, woken by :meth:`decode_started` or a timeout."""

    def __init__(self, max_delay_s: float = 0.05, name: str = "spare-time") -> None:
        self.max_delay_s = max_delay_s
        self._jobs: deque[Job] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future, job = new_job(fn, *args, **kwargs)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new jobs after shutdown")
            self._jobs.append(job)
        return future

    def decode_started(self) -> None:
        """Called by a decode thread as it starts: one core is about to be spare."""
        if self._jobs:
            self._wake.set()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new jobs; queued ones still run (or are cancelled), then the thread exits."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                cancel_all(self._jobs)
        self._wake.set()
        if wait:
            self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.max_delay_s)
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._jobs:
                        closed = self._closed
                        break
                    job = self._jobs.popleft()
                run_job(job)
            if closed:
                return
