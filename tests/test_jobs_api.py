"""/v1/jobs end to end: a fresh app works jobs off in-process (the embedded default)."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings

OWNER_A, OWNER_B, PREDICT_ONLY, ADMIN = "apd_key_a", "apd_key_b", "apd_predict", "apd_admin"
KEYS = [
    {"id": "a", "sha256": hash_key(OWNER_A), "scopes": ["jobs"]},
    {"id": "b", "sha256": hash_key(OWNER_B), "scopes": ["jobs", "predict"]},
    {"id": "shop", "sha256": hash_key(PREDICT_ONLY), "scopes": ["predict"]},
    {"id": "ops", "sha256": hash_key(ADMIN), "scopes": ["admin"]},
]


def _settings(tmp: Path, bundle_dir: Path, **jobs: Any) -> Settings:
    return Settings(
        model=str(bundle_dir),
        environment="production",
        database_url=f"sqlite:///{tmp / 'apd.db'}",
        auth={"keys": KEYS},
        rate_limit={"enabled": False},
        jobs={
            "queue_url": f"sqlite:///{tmp / 'queue.db'}",
            "spool_dir": str(tmp / "spool"),
            "chunk_size": 4,
            "storage_roots": [str(tmp / "catalogue")],
            "reap_interval_s": 0.2,
            "in_process": True,  # the service starts its worker process
            **jobs,
        },
    )


@pytest.fixture(scope="module")
def photos(tiny_dataset: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(tiny_dataset.rglob("*.jpg"))[:10]]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def client(workdir: Path, bundle_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(workdir, bundle_dir))) as test_client:
        yield test_client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _submit(client: TestClient, body: bytes, key: str = OWNER_A, **headers: str) -> httpx.Response:
    return client.post(
        "/v1/jobs",
        content=body,
        headers={"content-type": "application/zip", **_auth(key), **headers},
    )


def _wait_done(client: TestClient, job_id: str, key: str = OWNER_A) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=_auth(key)).json()
        if status["status"] not in ("queued", "running"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {status}")


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_archive_job_scores_every_image_once(client: TestClient, photos: list[bytes]) -> None:
    members = {f"shop/{i:02d}.jpg": data for i, data in enumerate(photos)}
    broken_bytes = photos[0][: len(photos[0]) // 2]
    members["shop/broken.jpg"] = broken_bytes
    response = _submit(client, _zip(members))
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["total"] == len(members) and job["source"] == "zip"

    done = _wait_done(client, job["id"])
    assert done["status"] == "done"
    assert (done["done"], done["failed"]) == (len(photos), 1)
    assert done["rate_per_s"] > 0 and done["eta_s"] is None

    lines = client.get(f"/v1/jobs/{job['id']}/results", headers=_auth(OWNER_A))
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in lines.text.splitlines()]
    assert [r["item"] for r in rows] == list(range(len(members)))
    assert [r["name"] for r in rows] == list(members)
    refused = client.post(
        "/v1/predict",
        content=broken_bytes,
        headers={"content-type": "image/jpeg", **_auth(OWNER_B)},
    ).json()
    assert rows[-1]["error"]["code"] == refused["error"]["code"]
    # The same verdict as /v1/predict gives for the same photo.
    single = client.post(
        "/v1/predict", content=photos[0], headers={"content-type": "image/jpeg", **_auth(OWNER_B)}
    ).json()
    first = rows[0]
    assert first["label"] == single["label"] and first["band"] == single["band"]
    assert first["probability"] == pytest.approx(single["probability"], abs=1e-5)
    assert first["model"] == single["model"] and first["image"] == single["image"]

    table = client.get(f"/v1/jobs/{job['id']}/results?format=csv", headers=_auth(OWNER_A))
    records = list(csv.DictReader(io.StringIO(table.text)))
    assert len(records) == len(members)
    assert records[-1]["error_code"] == refused["error"]["code"]
    assert float(records[0]["probability"]) == pytest.approx(first["probability"])

    import pyarrow.parquet as pq

    parquet = client.get(
        f"/v1/jobs/{job['id']}/results",
        headers={"accept": "application/vnd.apache.parquet", **_auth(OWNER_A)},
    )
    frame = pq.read_table(io.BytesIO(parquet.content)).to_pylist()
    assert [r["item"] for r in frame] == list(range(len(members)))
    assert frame[0]["sha256"] == first["image"]["sha256"]


def test_manifest_job_reads_under_the_roots(
    client: TestClient, workdir: Path, photos: list[bytes]
) -> None:
    folder = workdir / "catalogue" / "seller-7"
    folder.mkdir(parents=True)
    paths = []
    for i, data in enumerate(photos[:3]):
        (folder / f"{i}.jpg").write_bytes(data)
        paths.append(str(folder / f"{i}.jpg"))
    paths.append(str(folder / "missing.jpg"))
    response = client.post("/v1/jobs", json={"paths": paths}, headers=_auth(OWNER_A))
    assert response.status_code == 202, response.text
    done = _wait_done(client, response.json()["id"])
    assert (done["status"], done["done"], done["failed"]) == ("done", 3, 1)
    rows = client.get(done["links"]["results"], headers=_auth(OWNER_A)).text.splitlines()
    assert json.loads(rows[-1])["error"]["code"] == "not_found"

    outside = client.post("/v1/jobs", json={"paths": ["/etc/passwd"]}, headers=_auth(OWNER_A))
    _error(outside, 403, "path_outside_roots")
    url = client.post(
        "/v1/jobs",
        content="http://169.254.169.254/latest/meta-data\n",
        headers={"content-type": "text/plain", **_auth(OWNER_A)},
    )
    _error(url, 403, "path_outside_roots")


def test_idempotency_key_returns_the_same_job(client: TestClient, photos: list[bytes]) -> None:
    body = _zip({"1.jpg": photos[0]})
    first = _submit(client, body, **{"Idempotency-Key": "upload-42"})
    again = _submit(client, body, **{"Idempotency-Key": "upload-42"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = _submit(client, _zip({"2.jpg": photos[1]}), **{"Idempotency-Key": "upload-42"})
    _error(other, 409, "idempotency_key_reused")
    # Keys are per API key: another caller's same key is another job.
    theirs = _submit(client, body, key=OWNER_B, **{"Idempotency-Key": "upload-42"})
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


def test_jobs_belong_to_their_key(client: TestClient, photos: list[bytes]) -> None:
    job = _submit(client, _zip({"1.jpg": photos[0]})).json()
    _error(client.get(f"/v1/jobs/{job['id']}", headers=_auth(OWNER_B)), 404, "job_not_found")
    _error(
        client.get(f"/v1/jobs/{job['id']}/results", headers=_auth(OWNER_B)), 404, "job_not_found"
    )
    _error(client.delete(f"/v1/jobs/{job['id']}", headers=_auth(OWNER_B)), 404, "job_not_found")
    assert client.get(f"/v1/jobs/{job['id']}", headers=_auth(ADMIN)).status_code == 200
    mine = {j["id"] for j in client.get("/v1/jobs", headers=_auth(OWNER_B)).json()["jobs"]}
    everyone = {j["id"] for j in client.get("/v1/jobs", headers=_auth(ADMIN)).json()["jobs"]}
    assert job["id"] not in mine and job["id"] in everyone
    _error(_submit(client, _zip({"1.jpg": photos[0]}), key=PREDICT_ONLY), 403, "insufficient_scope")
    _error(client.get("/v1/jobs"), 401, "missing_api_key")


def test_bad_submissions_get_stable_codes(client: TestClient, photos: list[bytes]) -> None:
    _error(_submit(client, photos[0]), 415, "archive_unsupported")
    _error(_submit(client, _zip({"../../x.jpg": photos[0]})), 422, "archive_path")
    _error(_submit(client, _zip({"notes.txt": b"x"})), 422, "archive_empty")
    _error(_submit(client, b""), 400, "empty_body")
    _error(
        client.post(
            "/v1/jobs", content=b"x", headers={"content-type": "image/png", **_auth(OWNER_A)}
        ),
        415,
        "unsupported_media_type",
    )
    _error(
        client.post("/v1/jobs?model=nope", content=b"x", headers=_auth(OWNER_A)),
        404,
        "model_not_found",
    )
    _error(client.get("/v1/jobs/nope", headers=_auth(OWNER_A)), 404, "job_not_found")
    _error(
        client.get("/v1/jobs/x/results?format=xml", headers=_auth(OWNER_A)), 422, "invalid_request"
    )
    long_key = {"Idempotency-Key": "k" * 129}
    _error(_submit(client, _zip({"1.jpg": photos[0]}), **long_key), 400, "bad_idempotency_key")


def test_limits_and_cancel(workdir: Path, bundle_dir: Path, photos: list[bytes]) -> None:
    """With no consumer in the service, jobs stay queued: the per-key limits bite, and a
    cancelled job is never worked on."""
    tmp = workdir / "quiet"
    tmp.mkdir()
    settings = _settings(
        tmp,
        bundle_dir,
        in_process=False,
        max_active_jobs_per_key=2,
        max_active_images_per_key=5,
        max_archive_bytes=len(_zip({"1.jpg": photos[0]})) * 8,
    )
    with TestClient(create_app(settings)) as client:
        one = _submit(client, _zip({"1.jpg": photos[0], "2.jpg": photos[1]})).json()
        _error(_submit(client, _zip({f"{i}.jpg": photos[i] for i in range(4)})), 429, "job_limit")
        _submit(client, _zip({"3.jpg": photos[2]}))
        _error(_submit(client, _zip({"4.jpg": photos[3]})), 429, "job_limit")
        assert _submit(client, _zip({"4.jpg": photos[3]}), key=OWNER_B).status_code == 202

        cancelled = client.delete(f"/v1/jobs/{one['id']}", headers=_auth(OWNER_A))
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        _error(client.delete(f"/v1/jobs/{one['id']}", headers=_auth(OWNER_A)), 409, "job_finished")
        assert _submit(client, _zip({"4.jpg": photos[3]})).status_code == 202  # room again

        big = _zip({f"{i}.jpg": photos[i % len(photos)] for i in range(30)})
        _error(_submit(client, big, key=OWNER_B), 413, "body_too_large")
        # Refused uploads are gone, and so is the cancelled job's: three queued jobs remain.
        assert len(list((tmp / "spool").iterdir())) == 3


def test_the_services_worker_process_is_restarted(client: TestClient, photos: list[bytes]) -> None:
    """Killed, the worker beside the service comes back, and jobs are worked off again."""
    import os
    import signal

    worker = client.app.state.services.job_worker  # type: ignore[attr-defined]
    _wait = time.monotonic() + 30
    while worker.process is None and time.monotonic() < _wait:
        time.sleep(0.05)
    first = worker.process.pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (worker.process.pid == first or worker.process.returncode is not None) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert worker.process.pid != first and worker.restarts >= 1
    job = _submit(client, _zip({"1.jpg": photos[0]})).json()
    assert _wait_done(client, job["id"])["done"] == 1
