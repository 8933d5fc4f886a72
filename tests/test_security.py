"""API keys, scopes and rate limits (memory storage and the real Redis on 127.0.0.1:6379)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ai_photo_detector.cli import app as cli
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings
from helpers import http_scope

PREDICT_KEY = "apd_predict_key_for_tests_0123456789"
ADMIN_KEY = "apd_admin_key_for_tests_0123456789"
KEYS = [
    {"id": "shop", "sha256": hash_key(PREDICT_KEY), "scopes": ["predict"]},
    {"id": "ops", "sha256": hash_key(ADMIN_KEY), "scopes": ["admin"]},
]


@pytest.fixture
def jpeg(tiny_dataset: Path) -> bytes:
    return sorted((tiny_dataset / "real").iterdir())[0].read_bytes()


def _client(bundle_dir: Path, peer: str = "testclient", **overrides: object) -> TestClient:
    settings = Settings(model=str(bundle_dir), **overrides)  # type: ignore[arg-type]
    return TestClient(create_app(settings), client=(peer, 50000))


@pytest.fixture
def production(bundle_dir: Path) -> Iterator[TestClient]:
    with _client(bundle_dir, environment="production", auth={"keys": KEYS}) as client:
        yield client


def test_production_requires_a_key(production: TestClient, jpeg: bytes) -> None:
    response = production.post("/v1/predict", content=jpeg)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    assert production.get("/v1/models").status_code == 401


def test_bearer_and_x_api_key_are_accepted(production: TestClient, jpeg: bytes) -> None:
    bearer = production.post(
        "/v1/predict", content=jpeg, headers={"Authorization": f"Bearer {PREDICT_KEY}"}
    )
    header = production.post("/v1/predict", content=jpeg, headers={"X-API-Key": PREDICT_KEY})
    assert bearer.status_code == header.status_code == 200


def test_wrong_key_is_refused(production: TestClient, jpeg: bytes) -> None:
    response = production.post(
        "/v1/predict", content=jpeg, headers={"X-API-Key": PREDICT_KEY + "x"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_health_and_metrics_stay_open(production: TestClient) -> None:
    assert production.get("/v2/health/live").status_code == 200
    assert production.get("/v2/health/ready").status_code == 200
    assert production.get("/metrics").status_code == 200


def test_scopes(bundle_dir: Path, jpeg: bytes) -> None:
    closed = {"keys": KEYS, "open_paths": ["/v2/health/live"]}
    with _client(bundle_dir, environment="production", auth=closed) as client:
        predict_only = {"X-API-Key": PREDICT_KEY}
        refused = client.get("/metrics", headers=predict_only)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_scope"
        assert client.get("/metrics", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
        assert client.get("/v2/health/ready").status_code == 401
        assert (
            client.post("/v1/predict", content=jpeg, headers={"X-API-Key": ADMIN_KEY}).status_code
            == 200
        )


def test_development_mode_needs_no_key(bundle_dir: Path, jpeg: bytes) -> None:
    with _client(bundle_dir) as client:
        assert client.post("/v1/predict", content=jpeg).status_code == 200


def _exhaust(client: TestClient, jpeg: bytes, headers: dict[str, str], limit: int) -> list[int]:
    return [
        client.post("/v1/predict", content=jpeg, headers=headers).status_code
        for _ in range(limit + 1)
    ]


def test_rate_limit_per_key_in_memory(bundle_dir: Path, jpeg: bytes) -> None:
    limit = {"limit": "3/minute"}
    with _client(
        bundle_dir, environment="production", auth={"keys": KEYS}, rate_limit=limit
    ) as client:
        statuses = _exhaust(client, jpeg, {"X-API-Key": PREDICT_KEY}, 3)
        assert statuses == [200, 200, 200, 429]
        refused = client.post("/v1/predict", content=jpeg, headers={"X-API-Key": PREDICT_KEY})
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit"] == "3"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        # another key has its own budget
        assert (
            client.post("/v1/predict", content=jpeg, headers={"X-API-Key": ADMIN_KEY}).status_code
            == 200
        )
        ok = client.get("/v1/models", headers={"X-API-Key": ADMIN_KEY})
        assert ok.headers["x-ratelimit-remaining"] == "1"
        metrics = client.get("/metrics").text
        assert "apd_rate_limited_total 2.0" in metrics


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(
    bundle_dir: Path, jpeg: bytes
) -> None:
    limit = {"limit": "2/minute"}
    with _client(bundle_dir, rate_limit=limit) as client:
        spoofed = [
            client.post(
                "/v1/predict", content=jpeg, headers={"X-Forwarded-For": f"10.0.0.{i}"}
            ).status_code
            for i in range(3)
        ]
        assert spoofed == [200, 200, 429]  # the header did not buy new budgets
    trusted = {"limit": "2/minute", "trusted_proxies": ["127.0.0.0/8"]}
    with _client(bundle_dir, peer="127.0.0.1", rate_limit=trusted) as client:
        per_client = [
            client.post(
                "/v1/predict", content=jpeg, headers={"X-Forwarded-For": f"203.0.113.{i}"}
            ).status_code
            for i in range(3)
        ]
        assert per_client == [200, 200, 200]


def _redis_available() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_available(), reason="needs Redis on 127.0.0.1:6379")
def test_rate_limit_shared_through_real_redis(bundle_dir: Path, jpeg: bytes) -> None:
    shared = {
        "limit": "4/minute",
        "storage_uri": "redis://127.0.0.1:6379",
        "key_prefix": f"apd-test-{uuid.uuid4().hex}",
    }
    common = {"environment": "production", "auth": {"keys": KEYS}, "rate_limit": shared}
    headers = {"X-API-Key": PREDICT_KEY}
    # two replicas of the service share one budget through Redis
    with _client(bundle_dir, **common) as first, _client(bundle_dir, **common) as second:
        statuses = [
            (first if i % 2 else second)
            .post("/v1/predict", content=jpeg, headers=headers)
            .status_code
            for i in range(5)
        ]
        assert statuses == [200, 200, 200, 200, 429]


def test_keys_create_prints_a_key_and_its_hash() -> None:
    result = CliRunner().invoke(cli, ["keys", "create", "--id", "shop", "--scope", "predict"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    key, entry = lines[0], json.loads(lines[-1])
    assert entry == {"id": "shop", "sha256": hash_key(key), "scopes": ["predict"]}
    assert key not in lines[-1]


def test_production_without_keys_refuses_to_start(bundle_dir: Path) -> None:
    from ai_photo_detector.errors import SettingsInvalid

    with (
        pytest.raises(SettingsInvalid, match="API keys are required"),
        _client(bundle_dir, environment="production"),
    ):
        pass
    # Saying so deliberately is allowed.
    with _client(bundle_dir, environment="production", auth={"mode": "disabled"}) as client:
        assert client.get("/v2/health/ready").status_code == 200


def test_failed_authentication_is_rate_limited(bundle_dir: Path, jpeg: bytes) -> None:
    limit = {"limit": "3/minute"}
    with _client(
        bundle_dir, environment="production", auth={"keys": KEYS}, rate_limit=limit
    ) as client:
        guesses = [
            client.post("/v1/predict", content=jpeg, headers={"X-API-Key": f"apd_guess{i}"})
            for i in range(4)
        ]
        assert [r.status_code for r in guesses] == [401, 401, 401, 429]
        # A valid key keeps its own budget.
        ok = client.post("/v1/predict", content=jpeg, headers={"X-API-Key": PREDICT_KEY})
        assert ok.status_code == 200


def test_rate_limit_storage_down_follows_the_policy(bundle_dir: Path, jpeg: bytes) -> None:
    """Redis unreachable (nothing listens on port 1): never a 5xx; 'local' keeps limiting in
    this replica's memory, 'refuse' answers 503 with Retry-After."""
    down = {"limit": "2/minute", "storage_uri": "redis://127.0.0.1:1", "storage_retry_s": 60}
    with _client(bundle_dir, rate_limit=down) as client:
        statuses = [client.post("/v1/predict", content=jpeg).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert "apd_rate_limit_storage_errors_total 1.0" in client.get("/metrics").text
    with _client(bundle_dir, rate_limit={**down, "on_storage_error": "refuse"}) as client:
        refused = client.post("/v1/predict", content=jpeg)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "rate_limit_unavailable"
        assert int(refused.headers["retry-after"]) >= 1


def test_docs_are_closed_in_production_and_carry_security_headers(bundle_dir: Path) -> None:
    with _client(bundle_dir, environment="production", auth={"keys": KEYS}) as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404
        assert client.get("/openapi.json").status_code == 401
        schema = client.get("/openapi.json", headers={"X-API-Key": PREDICT_KEY})
        assert schema.status_code == 200 and "/v1/predict" in schema.json()["paths"]
    with _client(bundle_dir) as client:  # development: the docs are served
        page = client.get("/docs")
        assert page.status_code == 200
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        policy = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "https://cdn.jsdelivr.net" in policy
        assert client.get("/openapi.json").status_code == 200


def test_a_body_trickling_in_is_cut_off(bundle_dir: Path, jpeg: bytes) -> None:
    """A client sending a byte at a time is answered 408 once server.body_timeout_s has
    passed, however steadily the bytes come (no idle timeout would ever fire)."""
    import asyncio
    import time

    messages: list[dict[str, object]] = []

    async def trickle() -> None:
        sent = 0

        async def receive() -> dict[str, object]:
            nonlocal sent
            await asyncio.sleep(0.05)
            sent += 1
            return {"type": "http.request", "body": jpeg[sent - 1 : sent], "more_body": True}

        async def send(message: dict[str, object]) -> None:
            messages.append(message)

        scope = http_scope("/v1/predict", [(b"content-type", b"image/jpeg")])
        await client.app(scope, receive, send)  # type: ignore[arg-type]

    with _client(bundle_dir, server={"body_timeout_s": 0.5}) as client:
        started = time.monotonic()
        client.portal.call(trickle)  # type: ignore[union-attr]
        elapsed = time.monotonic() - started
        start = next(m for m in messages if m["type"] == "http.response.start")
        assert start["status"] == 408 and elapsed < 5
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        assert b"body_timeout" in body
        # An honest request still goes through.
        assert client.post("/v1/predict", content=jpeg).status_code == 200


def test_a_predict_key_reaches_no_other_scope(bundle_dir: Path, jpeg: bytes) -> None:
    """Every route of another scope refuses a predict-only key with 403 (admin, review,
    operations, jobs, drift runs, reloads); jobs of another key are covered in test_jobs_api."""
    with _client(bundle_dir, environment="production", auth={"keys": KEYS}) as client:
        shop = {"X-API-Key": PREDICT_KEY}
        fenced = [
            ("GET", "/v1/review/queue"),
            ("POST", "/v1/review/claim"),
            ("GET", "/v1/ops/overview"),
            ("POST", "/v1/admin/reload"),
            ("POST", "/v1/drift/run"),
            ("GET", "/v1/jobs"),
        ]
        for method, path in fenced:
            answer = client.request(method, path, headers=shop, json={})
            assert answer.status_code == 403, (path, answer.text)
            assert answer.json()["error"]["code"] == "insufficient_scope"


def test_api_keys_never_appear_in_logs_or_error_bodies(
    bundle_dir: Path, jpeg: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "apd_wrong_key_never_to_be_echoed_0123456789"
    bodies = []
    with (
        caplog.at_level("DEBUG"),
        _client(bundle_dir, environment="production", auth={"keys": KEYS}) as client,
    ):
        for headers in (
            {"X-API-Key": wrong},
            {"Authorization": f"Bearer {wrong}"},
            {"X-API-Key": PREDICT_KEY},
        ):
            bodies.append(client.post("/v1/predict", content=b"not an image", headers=headers))
            bodies.append(client.get("/v1/ops/overview", headers=headers))
            bodies.append(client.post("/v1/predict", content=jpeg, headers=headers))
    assert {b.status_code for b in bodies} >= {401, 403, 415, 200}
    for secret in (wrong, PREDICT_KEY, ADMIN_KEY):
        assert secret not in caplog.text
        assert all(secret not in b.text and secret not in str(b.headers) for b in bodies)
