"""Contract tests of the HTTP API against a real trained bundle."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from helpers import encode, http_scope, smooth_image


@pytest.fixture(scope="module")
def settings(bundle_dir: Path) -> Settings:
    return Settings(
        model=str(bundle_dir), server={"max_upload_bytes": 2_000_000, "max_batch_items": 4}
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def jpeg(tiny_dataset: Path) -> bytes:
    return sorted((tiny_dataset / "ai").iterdir())[0].read_bytes()


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    assert body["error"]["message"]


def test_predict_multipart(client: TestClient, jpeg: bytes) -> None:
    response = client.post("/v1/predict", files={"file": ("photo.jpg", jpeg, "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert body["label"] in {"ai", "real"} and body["band"] in {"ai", "real", "uncertain"}
    assert abs(sum(body["scores"].values()) - 1) < 1e-6
    assert body["probability"] == body["scores"]["ai"]
    assert body["model"] == {"name": "ai-photo-detector", "version": "test"}
    assert set(body["timing"]) == {"queue_ms", "preprocess_ms", "inference_ms"}
    assert body["image"]["format"] == "JPEG" and body["image"]["bytes"] == len(jpeg)
    assert body["request_id"] == response.headers["x-request-id"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_predict_raw_body_matches_multipart(client: TestClient, jpeg: bytes) -> None:
    raw = client.post("/v1/predict", content=jpeg, headers={"content-type": "image/jpeg"}).json()
    form = client.post("/v1/predict", files={"file": ("x.jpg", jpeg)}).json()
    assert raw["probability"] == pytest.approx(form["probability"], abs=1e-6)


def test_client_request_id_is_echoed(client: TestClient, jpeg: bytes) -> None:
    response = client.post("/v1/predict", content=jpeg, headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123" == response.json()["request_id"]


def _png_bomb() -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 99))
        + chunk(b"IEND", b"")
    )


def _bad_inputs(jpeg: bytes) -> list[tuple[str, bytes, int, str]]:
    tiny = encode(Image.new("RGB", (4, 4)), "PNG")
    bmp = encode(smooth_image(np.random.default_rng(0), 64), "BMP")
    return [
        ("empty", b"", 400, "empty_body"),
        ("text", b"hello world, not an image", 415, "unsupported_format"),
        (
            "html",
            b"<!DOCTYPE html><html><script>alert(1)</script></html>",
            415,
            "unsupported_format",
        ),
        ("polyglot html with gif name", b"<html>GIF89a" + jpeg[:200], 415, "unsupported_format"),
        ("truncated", jpeg[: len(jpeg) // 2], 422, "truncated_image"),
        (
            "jpeg+html polyglot",
            jpeg + b"<html><script>alert(1)</script></html>",
            422,
            "polyglot_file",
        ),
        ("corrupt", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, 422, "corrupt_image"),
        ("bomb", _png_bomb(), 413, "image_too_large"),
        ("tiny", tiny, 422, "image_too_small"),
        ("unsupported bmp", bmp, 415, "unsupported_format"),
    ]


def test_bad_input_corpus_gets_4xx_json_errors(client: TestClient, jpeg: bytes) -> None:
    for name, data, status, code in _bad_inputs(jpeg):
        response = client.post("/v1/predict", content=data, headers={"content-type": "image/jpeg"})
        assert response.status_code == status, (name, response.text)
        _error(response, status, code)
        multipart = client.post("/v1/predict", files={"file": ("a.png", data, "image/png")})
        _error(multipart, status, code)


def test_body_limit_is_enforced_while_streaming(client: TestClient, settings: Settings) -> None:
    limit = settings.server.max_upload_bytes
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(100):
            sent += 100_000
            yield b"\xff" * 100_000

    response = client.post("/v1/predict", content=body())  # chunked: no Content-Length
    _error(response, 413, "body_too_large")
    declared = client.post("/v1/predict", content=b"x" * (limit + 1))
    _error(declared, 413, "body_too_large")


def test_missing_file_field(client: TestClient) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nvalue\r\n--b--\r\n'
    headers = {"content-type": "multipart/form-data; boundary=b"}
    _error(client.post("/v1/predict", content=body, headers=headers), 400, "missing_file")
    # A urlencoded body is taken as the image itself (curl's default): text is no image.
    _error(client.post("/v1/predict", data={"name": "value"}), 415, "unsupported_format")


def test_batch_allows_partial_failure(client: TestClient, jpeg: bytes) -> None:
    files = [("files", ("a.jpg", jpeg)), ("files", ("b.txt", b"nope")), ("files", ("c.jpg", jpeg))]
    response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 200
    body = response.json()
    assert body["succeeded"] == 2 and body["failed"] == 1
    assert [item["index"] for item in body["results"]] == [0, 1, 2]
    assert body["results"][1]["error"]["code"] == "unsupported_format"
    assert body["results"][1]["error"]["request_id"] == body["request_id"]
    assert body["results"][0]["result"]["label"] in {"ai", "real"}


def test_batch_item_limit(client: TestClient, jpeg: bytes) -> None:
    files = [("files", (f"{i}.jpg", jpeg)) for i in range(5)]
    _error(client.post("/v1/predict/batch", files=files), 413, "too_many_files")


def test_models_routes(client: TestClient) -> None:
    listing = client.get("/v1/models").json()
    assert listing["default"] == "ai-photo-detector"
    assert listing["models"][0]["ready"] is True
    detail = client.get("/v1/models/ai-photo-detector").json()
    assert detail["manifest"]["calibration"]["threshold"] >= 0
    assert "scores" not in detail["manifest"]["drift_reference"]
    _error(client.get("/v1/models/unknown"), 404, "model_not_found")
    _error(client.post("/v1/predict?model=unknown", content=b"x"), 404, "model_not_found")


def test_open_inference_protocol_routes(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/ai-photo-detector").json()
    assert meta["platform"] == "onnxruntime_onnx"
    assert [o["name"] for o in meta["outputs"]] == ["logits", "features", "embedding"]
    assert client.get("/v2/models/ai-photo-detector/ready").json()["ready"] is True
    _error(client.get("/v2/models/nope/ready"), 404, "model_not_found")


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    _error(client.get("/v1/predict"), 405, "method_not_allowed")


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_are_updated(client: TestClient, jpeg: bytes) -> None:
    before = client.get("/metrics").text
    client.post("/v1/predict", content=jpeg)
    client.post("/v1/predict", content=b"not an image")
    after = client.get("/metrics").text
    ok = {"method": "POST", "route": "/v1/predict", "status": "200"}
    assert (
        _metric(after, "apd_http_requests_total", **ok)
        == _metric(before, "apd_http_requests_total", **ok) + 1
    )
    assert _metric(after, "apd_input_errors_total", code="unsupported_format") >= 1
    for name in (
        "apd_queue_seconds_count",
        "apd_preprocess_seconds_count",
        "apd_inference_seconds_count",
        "apd_batch_size_count",
        "apd_image_bytes_count",
        "apd_image_pixels_count",
    ):
        assert _metric(after, name) > _metric(before, name), name
    assert _metric(after, "apd_prediction_score_count", model="ai-photo-detector") > 0
    assert _metric(after, "apd_predictions_total", model="ai-photo-detector", version="test") > 0
    assert _metric(after, "apd_model_ready", model="ai-photo-detector") == 1
    assert 'apd_model_info{backbone="tf_efficientnet_lite0"' in after
    assert _metric(after, "apd_http_requests_in_flight") == 1  # the scrape itself
    assert "apd_queue_depth" in after
    # unmatched paths share one label value: cardinality stays bounded
    client.get("/random/path/1")
    client.get("/random/path/2")
    assert 'route="unmatched"' in client.get("/metrics").text
    assert "/random/path" not in client.get("/metrics").text


def test_overload_answers_503_at_once(bundle_dir: Path, jpeg: bytes) -> None:
    settings = Settings(
        model=str(bundle_dir), server={"max_queue_size": 1, "max_queue_delay_ms": 50}
    )
    app = create_app(settings)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        async with app.router.lifespan_context(app), client as c:
            return await asyncio.gather(*(c.post("/v1/predict", content=jpeg) for _ in range(40)))

    responses = asyncio.run(burst())
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503} and 503 in statuses and 200 in statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    registry = app.state.services.metrics.registry
    refusals = sum(r.status_code == 503 for r in responses)
    assert registry.get_sample_value("apd_overloaded_total") == refusals


def test_hundred_concurrent_requests_all_answered(bundle_dir: Path, jpeg: bytes) -> None:
    app = create_app(Settings(model=str(bundle_dir)))
    expected: dict[str, float] = {}

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        async with app.router.lifespan_context(app), client as c:
            expected["p"] = (await c.post("/v1/predict", content=jpeg)).json()["probability"]
            return await asyncio.gather(*(c.post("/v1/predict", content=jpeg) for _ in range(100)))

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    assert all(r.json()["probability"] == pytest.approx(expected["p"], abs=1e-5) for r in responses)
    assert app.state.services.models.get(None).batcher.batches_run < 101  # requests were batched


def test_openapi_documents_routes_and_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    predict = schema["paths"]["/v1/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert {"200", "413", "415", "422", "503"} <= set(predict["responses"])
    assert "ErrorResponse" in schema["components"]["schemas"]
    # every documented error uses the one error shape, not FastAPI's default validation body
    assert "HTTPValidationError" not in json.dumps(schema["paths"])
    for path in (
        "/v1/predict/batch",
        "/v1/models",
        "/v1/models/{name}",
        "/v2/health/ready",
        "/metrics",
    ):
        assert path in schema["paths"]


def test_grayscale_png_with_alpha_is_scored(client: TestClient) -> None:
    image = Image.new("LA", (120, 90), (128, 200))
    response = client.post("/v1/predict", content=encode(image, "PNG"))
    assert response.status_code == 200
    assert response.json()["image"]["format"] == "PNG"


def test_webp_is_accepted(client: TestClient) -> None:
    data = encode(smooth_image(np.random.default_rng(2), 96), "WEBP")
    buffer = io.BytesIO(data)
    assert Image.open(buffer).format == "WEBP"
    assert client.post("/v1/predict", content=data).status_code == 200


def test_cors_is_off_by_default_and_configurable(bundle_dir: Path, client: TestClient) -> None:
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    closed = client.options("/v1/predict", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    settings = Settings(model=str(bundle_dir), server={"cors_origins": ["https://shop.example"]})
    with TestClient(create_app(settings)) as open_client:
        allowed = open_client.options("/v1/predict", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"


def test_several_workers_are_refused_one_process_per_container(bundle_dir: Path) -> None:
    from ai_photo_detector.serving.api.server import run_server

    with pytest.raises(SystemExit, match="one process per container"):
        run_server(Settings(model=str(bundle_dir), server={"workers": 2}))


def test_a_failed_start_releases_what_it_had_started(tmp_path: Path) -> None:
    """A model that cannot load fails start-up and leaves no thread or store behind."""
    import threading

    from ai_photo_detector.model.bundle import BundleError

    before = {thread.ident for thread in threading.enumerate()}
    settings = Settings(model=str(tmp_path / "missing"), database_url=f"sqlite:///{tmp_path}/a.db")
    with pytest.raises(BundleError), TestClient(create_app(settings)):
        pass
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []


def test_a_decoder_crash_is_422_and_fails_only_its_batch_item(
    client: TestClient, jpeg: bytes
) -> None:
    from test_imaging import GIF_STRUCT_ERROR

    single = client.post("/v1/predict", content=GIF_STRUCT_ERROR)
    assert single.status_code == 422 and single.json()["error"]["code"] == "corrupt_image"
    files = [("files", ("bad.gif", GIF_STRUCT_ERROR)), ("files", ("good.jpg", jpeg))]
    batch = client.post("/v1/predict/batch", files=files)
    assert batch.status_code == 200
    assert (batch.json()["failed"], batch.json()["succeeded"]) == (1, 1)


def test_a_client_leaving_mid_upload_is_no_server_error(client: TestClient, jpeg: bytes) -> None:
    """Counted as 499 (client closed request), not 500: it must not feed the 5xx alert."""
    messages: list[dict[str, object]] = []

    async def leave_mid_upload() -> None:
        parts = [
            {"type": "http.request", "body": jpeg[:1000], "more_body": True},
            {"type": "http.disconnect"},
        ]

        async def receive() -> dict[str, object]:
            return parts.pop(0) if parts else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            messages.append(message)

        scope = http_scope(
            "/v1/predict",
            [(b"content-type", b"image/jpeg"), (b"content-length", str(len(jpeg)).encode())],
        )
        await client.app(scope, receive, send)  # type: ignore[arg-type]

    client.portal.call(leave_mid_upload)  # type: ignore[union-attr]
    start = next(m for m in messages if m["type"] == "http.response.start")
    assert start["status"] == 499
    metrics = client.get("/metrics").text
    assert 'route="/v1/predict",status="499"' in metrics
    assert 'route="/v1/predict",status="500"' not in metrics


def test_curl_default_form_content_type_is_a_raw_image(client: TestClient, jpeg: bytes) -> None:
    """`curl --data-binary @photo.jpg` labels the body a urlencoded form: the bytes decide."""
    response = client.post(
        "/v1/predict",
        content=jpeg,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def test_form_parser_limits_answer_documented_codes(client: TestClient, jpeg: bytes) -> None:
    fields = {f"field{i}": "x" for i in range(40)}  # more fields than any upload needs
    many_fields = client.post("/v1/predict", data=fields, files={"file": ("a.jpg", jpeg)})
    assert many_fields.status_code == 400
    assert many_fields.json()["error"]["code"] == "bad_multipart"
    files = [("files", (f"{i}.jpg", jpeg)) for i in range(6)]  # the batch limit here is 4
    too_many = client.post("/v1/predict/batch", files=files)
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "too_many_files"
