"""The asyncio client: the methods of :class:`~ai_photo_detector.client.Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ai_photo_detector.client import calls
from ai_photo_detector.client.base import (
    config,
    delay_after_answer,
    delay_after_failure,
    final,
)
from ai_photo_detector.client.calls import Call, ImageInput
from ai_photo_detector.client.retry import RetryPolicy
from ai_photo_detector.contract.review import ClaimOut, ReviewItemOut, ReviewQueueOut, VerdictOut
from ai_photo_detector.contract.schemas import (
    BatchResponse,
    ExplainResponse,
    Explanation,
    FeedbackOut,
    JobList,
    JobResultRow,
    JobStatus,
    ModelDetail,
    ModelList,
    PredictResponse,
    Ready,
)

T = TypeVar("T")


class AsyncClient:
    """``async with AsyncClient("http://host:8000") as client: await client.predict(path)``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config(base_url, api_key, timeout, retry)
        self._http = httpx.AsyncClient(
            base_url=self.config.base_url,
            headers=self.config.headers(),
            timeout=self.config.timeout,
            limits=httpx.Limits(max_connections=max_connections),
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            elapsed = time.monotonic() - started
            try:
                response = await self._http.send(call.request(self._http))
            except httpx.TransportError as exc:
                delay = delay_after_failure(self.config.retry, call, exc, attempt, elapsed)
            else:
                answer_delay = delay_after_answer(self.config.retry, response, attempt, elapsed)
                if answer_delay is None:
                    return final(call, response)
                delay = answer_delay
            await asyncio.sleep(delay)
            attempt += 1

    async def predict(self, image: ImageInput, model: str | None = None) -> PredictResponse:
        return await self._send(calls.predict(image, model))

    async def predict_batch(
        self, images: list[ImageInput], model: str | None = None
    ) -> BatchResponse:
        return await self._send(calls.predict_batch(images, model))

    async def explain(
        self, image: ImageInput, model: str | None = None, overlay: bool = True
    ) -> ExplainResponse:
        return await self._send(calls.explain(image, model, overlay))

    async def feedback(
        self,
        prediction_id: str,
        label: str,
        source: str = "reviewer",
        idempotency_key: str | None = None,
    ) -> FeedbackOut:
        return await self._send(calls.feedback(prediction_id, label, source, idempotency_key))

    async def models(self) -> ModelList:
        return await self._send(calls.models())

    async def model(self, name: str) -> ModelDetail:
        return await self._send(calls.model(name))

    async def ready(self) -> Ready:
        return await self._send(calls.ready())

    async def review_queue(self, limit: int = 50, **filters: Any) -> ReviewQueueOut:
        return await self._send(calls.review_queue(limit, **filters))

    async def review_claim(self, **filters: Any) -> ClaimOut:
        return await self._send(calls.review_claim(**filters))

    async def review_item(self, prediction_id: str) -> ReviewItemOut:
        return await self._send(calls.review_item(prediction_id))

    async def review_verdict(self, prediction_id: str, label: str) -> VerdictOut:
        return await self._send(calls.review_verdict(prediction_id, label))

    async def review_release(self, prediction_id: str) -> None:
        await self._send(calls.review_release(prediction_id))

    async def review_explanation(self, prediction_id: str) -> Explanation:
        return await self._send(calls.review_explanation(prediction_id))

    async def submit_job(
        self,
        source: ImageInput | list[str],
        model: str | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> JobStatus:
        return await self._send(calls.submit_job(source, model, callback_url, idempotency_key))

    async def job(self, job_id: str) -> JobStatus:
        return await self._send(calls.job(job_id))

    async def jobs(self, limit: int = 50) -> JobList:
        return await self._send(calls.jobs(limit))

    async def cancel_job(self, job_id: str) -> JobStatus:
        return await self._send(calls.cancel_job(job_id))

    async def wait_for_job(
        self,
        job_id: str,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_progress: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = await self.job(job_id)
            if on_progress is not None:
                on_progress(status)
            if calls.settled(status, deadline, timeout_s):
                return status
            await asyncio.sleep(poll_s)

    async def iter_results(self, job_id: str) -> AsyncIterator[JobResultRow]:
        request = calls.job_results_request(self._http, job_id)
        response = await self._http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                calls.raise_for_error(response)
            async for line in response.aiter_lines():
                row = calls.result_row(line)
                if row is not None:
                    yield row
        finally:
            await response.aclose()
