"""A queued call and its future: what the service's own executors (the warm decode pool, the
spare-time worker) hand to their threads, run and cancel alike."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
Job = tuple[Future[Any], Callable[[], Any]]


def new_job(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> tuple[Future[T], Job]:
    future: Future[T] = Future()
    return future, (future, lambda: fn(*args, **kwargs))


def run_job(job: Job) -> None:
    """Run it unless cancelled; its result or exception goes to its future."""
    future, call = job
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(call())
    except BaseException as exc:  # handed to the future, as ThreadPoolExecutor does
        future.set_exception(exc)


def cancel_all(jobs: deque[Job]) -> None:
    while jobs:
        jobs.popleft()[0].cancel()
