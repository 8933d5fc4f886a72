"""The typed client against a real service on a loopback port: every route group, retries that
honour Retry-After, idempotent writes under retried requests, and one error type per code."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from ai_photo_detector import errors
from ai_photo_detector.client import NO_RETRY, AsyncClient, Client, RetryPolicy
from ai_photo_detector.client import errors as client_errors
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings
from live_service import live_service

KEY = "apd_client_tests_key_0123456789abcdef"
PREDICT_ONLY = "apd_client_tests_predict_only_0123456"
KEYS = [
    {"id": "team", "sha256": hash_key(KEY), "scopes": ["predict", "jobs", "review"]},
    {"id": "shop", "sha256": hash_key(PREDICT_ONLY), "scopes": ["predict"]},
]


class Recording(httpx.HTTPTransport):
    """The real transport, noting each answer's status (what the client saw before retrying)."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        return response


class LosesFirstAnswer(httpx.HTTPTransport):
    """Delivers the first request to ``path`` to the service, then loses its answer (a read
    timeout): the server did the work, the client cannot know it and sends again."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.sent.append(request.headers.get("idempotency-key", ""))
        if request.url.path == self.path and len(self.sent) == 1:
            response.read()
            response.close()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def _settings(tmp: Path, bundle_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "model": str(bundle_dir),
        "environment": "production",
        "auth": {"keys": KEYS},
        "database_url": f"sqlite:///{tmp / 'apd.db'}",
        "prediction_log": {"store_images": True, "image_dir": str(tmp / "images")},
        "review": {"sample_rate": 1.0},
        "rate_limit": {"enabled": False},
        "jobs": {
            "queue_url": f"sqlite:///{tmp / 'queue.db'}",
            "spool_dir": str(tmp / "spool"),
            "chunk_size": 4,
            "reap_interval_s": 0.2,
            "in_process": True,  # the service starts its worker process (tests turn it off)
        },
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def photos(tiny_dataset: Path) -> list[Path]:
    return sorted(tiny_dataset.rglob("*.jpg"))[:6]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[str]:
    with live_service(_settings(tmp_path_factory.mktemp("client"), bundle_dir)) as url:
        yield url


def _zip(photos: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for photo in photos:
            archive.writestr(photo.name, photo.read_bytes())
    return buffer.getvalue()


def test_scoring_models_and_feedback(service: str, photos: list[Path]) -> None:
    with Client(service, KEY) as client:
        by_path = client.predict(photos[0])
        by_bytes = client.predict(photos[0].read_bytes())
        with photos[0].open("rb") as file:
            by_file = client.predict(file)
        assert by_path.band in {"real", "uncertain", "ai"} and by_path.model.version
        assert by_path.probability == by_bytes.probability == by_file.probability
        assert len({by_path.prediction_id, by_bytes.prediction_id, by_file.prediction_id}) == 3

        batch = client.predict_batch([photos[1], photos[2], b"not an image"])
        assert (batch.succeeded, batch.failed) == (2, 1)
        assert batch.results[2].error is not None and batch.results[2].error.code

        explained = client.explain(photos[1], overlay=False)
        assert explained.explanation.grid and explained.explanation.overlay_jpeg is None

        listed = client.models()
        assert listed.default is not None and listed.models[0].ready
        assert client.model(listed.default).version == by_path.model.version
        assert client.ready().ready

        first = client.feedback(by_path.prediction_id, "ai")
        again = client.feedback(by_path.prediction_id, "ai")
        assert first.created and not again.created and not again.updated


def test_review_queue_calls(service: str, photos: list[Path]) -> None:
    with Client(service, KEY) as client:
        answers = [client.predict(p) for p in photos[3:5]]
        deadline = time.monotonic() + 10  # the prediction log writes in batches
        queued: set[str] = set()
        while time.monotonic() < deadline:
            queued = {item.prediction_id for item in client.review_queue(limit=500).items}
            if {a.prediction_id for a in answers} <= queued:
                break
            time.sleep(0.1)
        assert {a.prediction_id for a in answers} <= queued
        claimed = client.review_claim().item
        assert claimed is not None
        assert client.review_item(claimed.prediction_id).prediction_id == claimed.prediction_id
        assert client.review_explanation(claimed.prediction_id).grid
        verdict = client.review_verdict(claimed.prediction_id, "real")
        assert verdict.recorded and verdict.label == "real"
        with pytest.raises(client_errors.NotClaimed) as refused:
            client.review_release(claimed.prediction_id)
        assert refused.value.status == 404 and refused.value.request_id


def test_jobs_submit_wait_stream_and_cancel(service: str, photos: list[Path]) -> None:
    archive = _zip(photos)
    with Client(service, KEY) as client:
        job = client.submit_job(archive, idempotency_key="catalogue-2026-12-06")
        same = client.submit_job(archive, idempotency_key="catalogue-2026-12-06")
        assert same.id == job.id
        seen: list[str] = []
        finished = client.wait_for_job(
            job.id, poll_s=0.1, timeout_s=120, on_progress=lambda s: seen.append(s.status)
        )
        assert finished.status == "done" and finished.done == len(photos)
        assert seen[-1] == "done"
        rows = list(client.iter_results(job.id))
        assert [r.item for r in rows] == list(range(len(photos)))
        assert {r.name for r in rows} == {p.name for p in photos}
        assert all(r.error is None and r.band for r in rows)
        assert job.id in {j.id for j in client.jobs().jobs}
        with pytest.raises(client_errors.JobConflict) as over:
            client.cancel_job(job.id)
        assert over.value.code == "job_finished"
        with pytest.raises(errors.JobNotFound):  # the domain error's type catches it too
            client.job("no-such-job")


def test_errors_raise_one_type_per_code(service: str) -> None:
    with Client(service, KEY, retry=NO_RETRY) as client:
        with pytest.raises(client_errors.InvalidInput) as corrupt:
            client.predict(b"\xff\xd8\xff\xe0 not really a jpeg")
        assert corrupt.value.status in {415, 422} and corrupt.value.code != "invalid_input"
        assert isinstance(corrupt.value, errors.InputError)
        with pytest.raises(client_errors.ModelNotFound) as missing:
            client.predict(b"x", model="no-such-model")
        assert isinstance(missing.value, errors.ModelNotFound) and missing.value.status == 404
    with Client(service, "apd_not_a_key") as client, pytest.raises(client_errors.Unauthorized):
        client.models()
    with Client(service, PREDICT_ONLY) as client, pytest.raises(client_errors.Forbidden):
        client.jobs()


def test_resent_writes_do_not_duplicate_work(service: str, photos: list[Path]) -> None:
    archive = _zip(photos[:2])
    lossy = LosesFirstAnswer("/v1/jobs")
    with Client(service, KEY, transport=lossy) as client:
        before = {j.id for j in client.jobs(limit=500).jobs}
        job = client.submit_job(archive)  # sent twice: the first answer was lost
        after = {j.id for j in client.jobs(limit=500).jobs}
    assert len(lossy.sent) >= 2 and lossy.sent[0] == lossy.sent[1]  # one key, resent
    assert after - before == {job.id}  # one job, not two

    with Client(service, KEY) as plain:
        answer = plain.predict(photos[0])
    lossy = LosesFirstAnswer("/v1/feedback")
    with Client(service, KEY, transport=lossy) as client:
        verdict = client.feedback(answer.prediction_id, "real", source="listing-team")
    assert len(lossy.sent) == 2
    assert not verdict.created  # the lost first send stored it; the resend changed nothing


def test_rate_limited_calls_wait_for_retry_after(
    tmp_path: Path, bundle_dir: Path, photos: list[Path]
) -> None:
    settings = _settings(tmp_path, bundle_dir, rate_limit={"limit": "3/second"})
    with live_service(settings) as url:
        recording = Recording()
        started = time.monotonic()
        with Client(url, KEY, transport=recording) as client:
            answers = [client.predict(photos[i % len(photos)]) for i in range(8)]
        assert len(answers) == 8
        assert 429 in recording.statuses and recording.statuses.count(200) == 8
        assert time.monotonic() - started >= 1.0  # Retry-After is at least one second

        with (
            Client(url, KEY, retry=NO_RETRY) as client,
            pytest.raises(client_errors.RateLimited) as limited,
        ):
            for _ in range(10):
                client.predict(photos[0])
        assert limited.value.retry_after is not None and limited.value.retry_after >= 1


def test_overloaded_engine_is_retried_after_its_retry_after(
    tmp_path: Path, bundle_dir: Path, photos: list[Path]
) -> None:
    settings = _settings(
        tmp_path, bundle_dir, server={"max_queue_size": 1, "max_queue_delay_ms": 50}
    )
    data = photos[0].read_bytes()

    class AsyncRecording(httpx.AsyncHTTPTransport):
        statuses: ClassVar[list[int]] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            self.statuses.append(response.status_code)
            return response

    async def burst(url: str) -> list[float]:
        policy = RetryPolicy(max_attempts=20, max_elapsed_s=120)
        async with AsyncClient(url, KEY, retry=policy, transport=AsyncRecording()) as client:
            answers = await asyncio.gather(*(client.predict(data) for _ in range(24)))
            return [a.probability for a in answers]

    with live_service(settings) as url:
        probabilities = asyncio.run(burst(url))
    assert len(probabilities) == 24 and len(set(probabilities)) == 1
    assert 503 in AsyncRecording.statuses and AsyncRecording.statuses.count(200) == 24


def test_async_client_streams_job_results(service: str, photos: list[Path]) -> None:
    async def run() -> tuple[int, list[int]]:
        async with AsyncClient(service, KEY) as client:
            job = await client.submit_job(_zip(photos[:3]))
            await client.wait_for_job(job.id, poll_s=0.1, timeout_s=120)
            rows = [row.item async for row in client.iter_results(job.id)]
            return (await client.job(job.id)).done, rows

    done, rows = asyncio.run(run())
    assert done == 3 and rows == [0, 1, 2]


def test_every_domain_error_has_a_client_twin() -> None:
    domain = [
        kind
        for kind in vars(errors).values()
        if isinstance(kind, type)
        and issubclass(kind, errors.DetectorError)
        and kind is not errors.DetectorError
    ]
    for kind in domain:
        twin = client_errors.error_type(kind.code, 0)
        assert issubclass(twin, kind), f"{kind.__name__} ({kind.code}) has no client twin"
