"""Micro-batching over an ONNX Runtime session.

Concurrent requests are grouped into one inference call (up to ``max_batch_size`` images,
waiting at most ``max_delay_s`` for company). Admission is bounded: when ``max_queue`` images are
already being decoded, queued or inferred, a request is refused at once with
:class:`Overloaded` (HTTP 503 + Retry-After) rather than left to wait.
Inference runs on one dedicated thread, so the event loop never blocks on it; an image admitted
alone is instead inferred on the thread that decoded it (:meth:`MicroBatcher.run_alone`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.errors import Overloaded
from ai_photo_detector.model.inference import BatchOutput, OnnxDetector


@dataclass
class EngineResult:
    logits: NDArray[np.float32]
    embedding: NDArray[np.float32]
    queue_ms: float
    inference_ms: float
    batch_size: int
    features: NDArray[np.float32] | None = None  # the last feature map, for explanations


@dataclass
class Ticket:
    """One admitted image; released exactly once, by whoever finishes with it first."""

    released: bool = False


@dataclass
class _Pending:
    array: NDArray[np.float32]
    future: asyncio.Future[EngineResult]
    enqueued: float
    ticket: Ticket


class MicroBatcher:
    def __init__(
        self,
        detector: OnnxDetector,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        solo: OnnxDetector | None = None,
    ) -> None:
        self.detector = detector
        self.solo = solo or detector  # the session for lone images (run_alone)
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.max_pending = max_queue
        self.pending = 0  # admitted images: decoding, queued or being inferred
        self.closed = False  # stopped or stopping: admits and takes nothing more
        self._in_hand: list[_Pending] = []  # taken off the queue by the loop, not answered yet
        self._model_lock = threading.Lock()  # one run at a time: batched or a lone image's

    def run_alone(self, array: NDArray[np.float32]) -> EngineResult | None:
        """Infer one image on the calling (decode) thread when it is the only one admitted.

        A lone request has nothing to be batched with: running it where it was decoded saves
        two thread hand-offs. None when other images are admitted or the model is busy; the
        image then goes through the queue. ``pending`` is read from another thread: a stale
        value only sends an image one way or the other.
        """
        if self.pending != 1 or not self._model_lock.acquire(blocking=False):
            return None
        try:
            if self.closed:  # submit() then gives the retry-later answer
                return None
            return self._run_one(array, None, with_features=False)
        finally:
            self._model_lock.release()

    def run_explained(self, array: NDArray[np.float32]) -> EngineResult:
        """Infer one image with its feature map on the calling (decode) thread, waiting for
        the model if it is busy. Explanations are interactive and few: they are not batched,
        and batches do not fetch the feature map they do not need."""
        waiting = time.perf_counter()
        with self._model_lock:
            if self.closed:
                raise Overloaded("the model is shutting down")
            return self._run_one(array, waiting, with_features=True)

    def _run_one(
        self, array: NDArray[np.float32], waiting: float | None, with_features: bool
    ) -> EngineResult:
        """One image on the lone-image session; the caller holds the model lock."""
        started = time.perf_counter()
        output = self.solo.run(array[None], with_features=with_features)
        self.batches_run += 1
        return EngineResult(
            logits=output.logits[0],
            embedding=output.embedding[0],
            queue_ms=0.0 if waiting is None else (started - waiting) * 1000,
            inference_ms=(time.perf_counter() - started) * 1000,
            batch_size=1,
            features=None if output.features is None else output.features[0],
        )

    def _run_batch(self, stacked: NDArray[np.float32]) -> BatchOutput:
        with self._model_lock:
            return self.detector.run(stacked)

    @property
    def saturated(self) -> bool:
        return self.pending >= self.max_pending

    def admit(self) -> Ticket:
        """Reserve room for one image before any work is spent on it (decode included).

        Refusing here, not at the queue, keeps an overloaded server from decoding images it
        will refuse anyway: the 503 costs microseconds. Called on the event loop only.
        """
        if self.closed:
            raise Overloaded("the model is shutting down")
        if self.saturated:
            raise Overloaded("the inference queue is full")
        self.pending += 1
        return Ticket()

    def release(self, ticket: Ticket) -> None:
        if not ticket.released:
            ticket.released = True
            self.pending -= 1

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop taking work and answer every image still held with a retry-later error:
        queued ones, and the ones the loop had taken (collecting company or being inferred)
        when it was cancelled. Nothing admitted is left waiting for an answer."""
        self.closed = True  # before the first await: nothing is admitted from here on
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        held = self._in_hand
        while not self.queue.empty():
            held.append(self.queue.get_nowait())
        for pending in held:
            self.release(pending.ticket)
            if not pending.future.done():
                pending.future.set_exception(Overloaded("the model is shutting down"))
        held.clear()
        self._executor.shutdown(wait=True)
        await asyncio.to_thread(self._close_sessions)

    def _close_sessions(self) -> None:
        with self._model_lock:  # a decode thread may be running a lone image on them
            self.detector.close()
            if self.solo is not self.detector:
                self.solo.close()

    async def submit(self, array: NDArray[np.float32], ticket: Ticket) -> EngineResult:
        if self.closed:  # stopped while the image was decoding: no loop would ever take it
            raise Overloaded("the model is shutting down")
        future: asyncio.Future[EngineResult] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Pending(array, future, time.perf_counter(), ticket))
        except asyncio.QueueFull:
            raise Overloaded("the inference queue is full") from None
        return await future

    async def _collect(self) -> list[_Pending]:
        batch = self._in_hand  # held where stop() finds it if the loop is cancelled meanwhile
        batch.append(await self.queue.get())
        deadline = time.perf_counter() + self.max_delay_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            # Wait for company only when admitted images are still decoding: a lone request
            # goes straight to inference instead of paying the batching delay.
            if self.pending <= len(batch):
                break
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                # Not asyncio.wait_for: on Python 3.11 it can swallow stop()'s cancellation
                # when the get has just completed, and the loop would then outlive its model.
                async with asyncio.timeout(remaining):
                    batch.append(await self.queue.get())
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            batch = await self._collect()
            live = [p for p in batch if not p.future.cancelled()]
            if live:
                await self._answer(loop, live)
            batch.clear()  # not on cancellation: stop() answers what is still in hand

    async def _answer(self, loop: asyncio.AbstractEventLoop, live: list[_Pending]) -> None:
        started = time.perf_counter()
        stacked = np.stack([p.array for p in live])
        try:
            output = await loop.run_in_executor(self._executor, self._run_batch, stacked)
        except Exception as exc:  # a failed run fails its requests, never the loop
            for pending in live:
                self.release(pending.ticket)
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        inference_ms = (time.perf_counter() - started) * 1000
        self.batches_run += 1
        for i, pending in enumerate(live):
            self.release(pending.ticket)  # answered: room for the next image right away
            if not pending.future.done():
                pending.future.set_result(
                    EngineResult(
                        logits=output.logits[i],
                        embedding=output.embedding[i],
                        queue_ms=(started - pending.enqueued) * 1000,
                        inference_ms=inference_ms,
                        batch_size=len(live),
                    )
                )
