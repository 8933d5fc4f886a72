"""Every API call as data: what to send and how to read the answer. The sync and async
clients differ only in how they send, so each route is described once, here."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from ai_photo_detector.client.errors import TransportError, error_from_answer
from ai_photo_detector.client.retry import parse_retry_after
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
M = TypeVar("M", bound=BaseModel)
ImageInput = str | os.PathLike[str] | bytes | IO[bytes]
ARCHIVE_TYPES = {".zip": "application/zip", ".tar": "application/x-tar"}


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    json_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Safe to send again even when the first try may have reached the server (a GET, or a
    # write carrying an idempotency key). Refusals (429, 503) are retried regardless.
    idempotent: bool = False

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        params = {k: v for k, v in self.params.items() if v is not None}
        if self.json_body is not None:
            return http.build_request(
                self.method, self.path, params=params, json=self.json_body, headers=self.headers
            )
        return http.build_request(
            self.method, self.path, params=params, content=self.content, headers=self.headers
        )


def image_bytes(image: ImageInput) -> bytes:
    """The bytes to send; read once, so a retry sends the same body."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    data = image.read()
    if not isinstance(data, bytes):
        raise TypeError("open the file in binary mode ('rb')")
    return data


def image_name(image: ImageInput, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return Path(image).name
    return str(getattr(image, "name", "") or f"image-{index}")


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_from_answer(
        response.status_code,
        body,
        response.headers.get("x-request-id", ""),
        parse_retry_after(response.headers.get("retry-after")),
    )


def error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def model_reader(model: type[M]) -> Callable[[httpx.Response], M]:
    def read(response: httpx.Response) -> M:
        return model.model_validate_json(response.content)

    return read


def no_body(response: httpx.Response) -> None:
    return None


def result_row(line: str) -> JobResultRow | None:
    """One JSON line of a job's results (None for a blank line)."""
    return JobResultRow.model_validate_json(line) if line.strip() else None


def result_rows(lines: Iterable[str]) -> Iterator[JobResultRow]:
    for line in lines:
        row = result_row(line)
        if row is not None:
            yield row


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


# --- the routes ------------------------------------------------------------------------------


def predict(image: ImageInput, model: str | None) -> Call[PredictResponse]:
    return Call(
        "POST",
        "/v1/predict",
        model_reader(PredictResponse),
        params={"model": model},
        content=image_bytes(image),
        headers={"Content-Type": "application/octet-stream"},
    )


def explain(image: ImageInput, model: str | None, overlay: bool) -> Call[ExplainResponse]:
    return Call(
        "POST",
        "/v1/explain",
        model_reader(ExplainResponse),
        params={"model": model, "overlay": str(overlay).lower()},
        content=image_bytes(image),
        headers={"Content-Type": "application/octet-stream"},
    )


def predict_batch(images: list[ImageInput], model: str | None) -> Call[BatchResponse]:
    files = [("files", (image_name(img, i), image_bytes(img))) for i, img in enumerate(images)]
    body, content_type = encode_multipart(files)
    return Call(
        "POST",
        "/v1/predict/batch",
        model_reader(BatchResponse),
        params={"model": model},
        content=body,
        headers={"Content-Type": content_type},
    )


def encode_multipart(files: list[tuple[str, tuple[str, bytes]]]) -> tuple[bytes, str]:
    """A multipart body built once, so a retry resends the very same bytes."""
    request = httpx.Request("POST", "http://multipart.invalid/", files=files)
    return request.read(), request.headers["Content-Type"]


def feedback(
    prediction_id: str, label: str, source: str, idempotency_key: str | None
) -> Call[FeedbackOut]:
    return Call(
        "POST",
        "/v1/feedback",
        model_reader(FeedbackOut),
        json_body={"prediction_id": prediction_id, "label": label, "source": source},
        headers={"Idempotency-Key": idempotency_key or new_idempotency_key()},
        idempotent=True,  # one verdict per prediction and source: a resend changes nothing
    )


def models() -> Call[ModelList]:
    return Call("GET", "/v1/models", model_reader(ModelList), idempotent=True)


def model(name: str) -> Call[ModelDetail]:
    return Call("GET", f"/v1/models/{name}", model_reader(ModelDetail), idempotent=True)


def ready() -> Call[Ready]:
    return Call("GET", "/v2/health/ready", model_reader(Ready), idempotent=True)


def review_queue(limit: int, **filters: Any) -> Call[ReviewQueueOut]:
    return Call(
        "GET",
        "/v1/review/queue",
        model_reader(ReviewQueueOut),
        params={"limit": limit, **filters},
        idempotent=True,
    )


def review_claim(**filters: Any) -> Call[ClaimOut]:
    body = {k: v for k, v in filters.items() if v is not None}
    return Call("POST", "/v1/review/claim", model_reader(ClaimOut), json_body=body)


def review_item(prediction_id: str) -> Call[ReviewItemOut]:
    return Call(
        "GET",
        f"/v1/review/items/{prediction_id}",
        model_reader(ReviewItemOut),
        idempotent=True,
    )


def review_verdict(prediction_id: str, label: str) -> Call[VerdictOut]:
    return Call(
        "POST",
        f"/v1/review/items/{prediction_id}/verdict",
        model_reader(VerdictOut),
        json_body={"label": label},
        idempotent=True,  # the verdict is stored once per reviewer and prediction
    )


def review_release(prediction_id: str) -> Call[None]:
    return Call("POST", f"/v1/review/items/{prediction_id}/release", no_body)


def review_explanation(prediction_id: str) -> Call[Explanation]:
    return Call(
        "GET",
        f"/v1/review/items/{prediction_id}/explanation",
        model_reader(Explanation),
        idempotent=True,
    )


def submit_job(
    source: ImageInput | list[str],
    model: str | None,
    callback_url: str | None,
    idempotency_key: str | None,
) -> Call[JobStatus]:
    """An archive (path, bytes or file: zip, tar or tar.gz) or a manifest (a list of paths
    under the server's storage roots)."""
    headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
    params = {"model": model, "callback_url": callback_url}
    if isinstance(source, list):
        return Call(
            "POST",
            "/v1/jobs",
            model_reader(JobStatus),
            params=params,
            json_body={"paths": source},
            headers=headers,
            idempotent=True,
        )
    suffix = Path(str(source)).suffix.lower() if isinstance(source, (str, os.PathLike)) else ""
    headers["Content-Type"] = ARCHIVE_TYPES.get(suffix, "application/octet-stream")
    return Call(
        "POST",
        "/v1/jobs",
        model_reader(JobStatus),
        params=params,
        content=image_bytes(source),
        headers=headers,
        idempotent=True,
    )


def job(job_id: str) -> Call[JobStatus]:
    return Call("GET", f"/v1/jobs/{job_id}", model_reader(JobStatus), idempotent=True)


def jobs(limit: int) -> Call[JobList]:
    return Call("GET", "/v1/jobs", model_reader(JobList), params={"limit": limit}, idempotent=True)


def cancel_job(job_id: str) -> Call[JobStatus]:
    return Call("DELETE", f"/v1/jobs/{job_id}", model_reader(JobStatus), idempotent=True)


def job_results_request(
    http: httpx.Client | httpx.AsyncClient, job_id: str, format: str = "jsonl"
) -> httpx.Request:
    return http.build_request("GET", f"/v1/jobs/{job_id}/results", params={"format": format})


FINISHED = frozenset({"done", "cancelled"})


def finished(status: JobStatus) -> bool:
    return status.status in FINISHED


def settled(status: JobStatus, deadline: float | None, timeout_s: float | None) -> bool:
    """True once the job is over; raises :class:`TransportError` once the wait is past its
    deadline (``time.monotonic()``), False while it should go on."""
    if finished(status):
        return True
    if deadline is not None and time.monotonic() >= deadline:
        raise TransportError(f"job {status.id} still {status.status} after {timeout_s} s")
    return False
