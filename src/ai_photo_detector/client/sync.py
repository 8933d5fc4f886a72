"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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


class Client:
    """``Client("http://host:8000", api_key=...)``; the key defaults to ``APD_API_KEY`` or the
    file ``APD_API_KEY_FILE`` names. Refusals (429, 503) are retried after their Retry-After,
    with jittered, bounded back-off; errors raise one type per code (``client.errors``)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 16,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config(base_url, api_key, timeout, retry)
        self._http = httpx.Client(
            base_url=self.config.base_url,
            headers=self.config.headers(),
            timeout=self.config.timeout,
            limits=httpx.Limits(max_connections=max_connections),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            elapsed = time.monotonic() - started
            try:
                response = self._http.send(call.request(self._http))
            except httpx.TransportError as exc:
                delay = delay_after_failure(self.config.retry, call, exc, attempt, elapsed)
            else:
                answer_delay = delay_after_answer(self.config.retry, response, attempt, elapsed)
                if answer_delay is None:
                    return final(call, response)
                delay = answer_delay
            time.sleep(delay)
            attempt += 1

    # --- scoring ---------------------------------------------------------------------------

    def predict(self, image: ImageInput, model: str | None = None) -> PredictResponse:
        return self._send(calls.predict(image, model))

    def predict_batch(self, images: list[ImageInput], model: str | None = None) -> BatchResponse:
        return self._send(calls.predict_batch(images, model))

    def explain(
        self, image: ImageInput, model: str | None = None, overlay: bool = True
    ) -> ExplainResponse:
        return self._send(calls.explain(image, model, overlay))

    def feedback(
        self,
        prediction_id: str,
        label: str,
        source: str = "reviewer",
        idempotency_key: str | None = None,
    ) -> FeedbackOut:
        return self._send(calls.feedback(prediction_id, label, source, idempotency_key))

    # --- models ----------------------------------------------------------------------------

    def models(self) -> ModelList:
        return self._send(calls.models())

    def model(self, name: str) -> ModelDetail:
        return self._send(calls.model(name))

    def ready(self) -> Ready:
        return self._send(calls.ready())

    # --- review queue ----------------------------------------------------------------------

    def review_queue(self, limit: int = 50, **filters: Any) -> ReviewQueueOut:
        return self._send(calls.review_queue(limit, **filters))

    def review_claim(self, **filters: Any) -> ClaimOut:
        return self._send(calls.review_claim(**filters))

    def review_item(self, prediction_id: str) -> ReviewItemOut:
        return self._send(calls.review_item(prediction_id))

    def review_verdict(self, prediction_id: str, label: str) -> VerdictOut:
        return self._send(calls.review_verdict(prediction_id, label))

    def review_release(self, prediction_id: str) -> None:
        self._send(calls.review_release(prediction_id))

    def review_explanation(self, prediction_id: str) -> Explanation:
        return self._send(calls.review_explanation(prediction_id))

    # --- jobs ------------------------------------------------------------------------------

    def submit_job(
        self,
        source: ImageInput | list[str],
        model: str | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> JobStatus:
        """An archive (path, bytes or binary file) or a manifest (a list of server paths).
        An idempotency key is sent (a new one unless given): a retry never makes a second job."""
        return self._send(calls.submit_job(source, model, callback_url, idempotency_key))

    def job(self, job_id: str) -> JobStatus:
        return self._send(calls.job(job_id))

    def jobs(self, limit: int = 50) -> JobList:
        return self._send(calls.jobs(limit))

    def cancel_job(self, job_id: str) -> JobStatus:
        return self._send(calls.cancel_job(job_id))

    def wait_for_job(
        self,
        job_id: str,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_progress: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        """Poll until the job is done or cancelled; ``on_progress`` sees every status."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.job(job_id)
            if on_progress is not None:
                on_progress(status)
            if calls.settled(status, deadline, timeout_s):
                return status
            time.sleep(poll_s)

    def iter_results(self, job_id: str) -> Iterator[JobResultRow]:
        """The job's result rows, streamed as they are read (JSON lines), in item order."""
        request = calls.job_results_request(self._http, job_id)
        response = self._http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                calls.raise_for_error(response)
            yield from calls.result_rows(response.iter_lines())
        finally:
            response.close()
