"""POST /v1/explain: the verdict of /v1/predict plus exact evidence, over HTTP."""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ai_photo_detector.model.bundle import HEAD_FILE, load_bundle, write_manifest
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings
from conftest import FAST_MODEL, SHIPPED_MODEL
from helpers import encode, patterned_image

PREDICT_KEY = "apd_explain_test_predict_key_0123456789"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    database = tmp_path_factory.mktemp("explain") / "explain.db"
    settings = Settings(model=str(SHIPPED_MODEL), database_url=f"sqlite:///{database}")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(patterned_image(np.random.default_rng(5), 640), quality=90)


def test_explanation_agrees_with_the_prediction_and_is_exact(
    client: TestClient, photo: bytes
) -> None:
    predicted = client.post("/v1/predict", content=photo).json()
    response = client.post("/v1/explain", files={"file": ("photo.jpg", photo, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    for field in ("label", "band", "probability", "scores", "model"):
        assert body[field] == pytest.approx(predicted[field]), field
    assert body["prediction_id"] != predicted["prediction_id"]  # logged as its own prediction
    explanation = body["explanation"]
    assert explanation["method"] == "class_activation_map"
    assert (explanation["target"], explanation["against"]) == ("ai", "real")
    grid = np.asarray(explanation["grid"])
    manifest = load_bundle(SHIPPED_MODEL).manifest
    height, width = manifest.onnx.feature_shape[1:]
    assert grid.shape == (height, width) and np.ptp(grid) > 0
    assert grid.mean() == pytest.approx(explanation["margin"], abs=1e-4)
    # The margin is the logit difference: at the calibration temperature its sigmoid is the
    # calibrated probability the verdict reports.
    temperature = manifest.calibration.temperature
    probability = 1 / (1 + math.exp(-explanation["margin"] / temperature))
    assert probability == pytest.approx(body["probability"], abs=1e-4)
    overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_jpeg"])))
    assert overlay.format == "JPEG"
    assert overlay.size == (manifest.preprocessing.input_size,) * 2


def test_overlay_can_be_left_out(client: TestClient, photo: bytes) -> None:
    response = client.post(
        "/v1/explain?overlay=false", content=photo, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200
    assert response.json()["explanation"]["overlay_jpeg"] is None


def test_bad_inputs_get_the_same_errors_as_predict(client: TestClient) -> None:
    for body in (b"", b"<html><body>hi</body></html>", b"\xff\xd8\xff\xe0" + b"\x00" * 64):
        response = client.post("/v1/explain", content=body)
        predicted = client.post("/v1/predict", content=body)
        assert 400 <= response.status_code < 500, response.text
        assert response.status_code == predicted.status_code
        error = response.json()["error"]
        assert error["code"] == predicted.json()["error"]["code"]
        assert error["request_id"] == response.headers["x-request-id"]
    unknown = client.post("/v1/explain?model=nope", content=b"x")
    assert unknown.status_code == 404


def test_explain_needs_the_predict_scope_in_production(tmp_path: Path, photo: bytes) -> None:
    settings = Settings(  # type: ignore[arg-type]
        model=str(SHIPPED_MODEL),
        database_url=f"sqlite:///{tmp_path / 'auth.db'}",
        environment="production",
        auth={"keys": [{"id": "shop", "sha256": hash_key(PREDICT_KEY), "scopes": ["predict"]}]},
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/explain", content=photo).status_code == 401
        allowed = client.post(
            "/v1/explain", content=photo, headers={"Authorization": f"Bearer {PREDICT_KEY}"}
        )
        assert allowed.status_code == 200


def test_a_bundle_without_its_head_answers_409(tmp_path: Path, photo: bytes) -> None:
    old = shutil.copytree(FAST_MODEL, tmp_path / "old")
    (old / HEAD_FILE).unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["explain"]["head_file"]
    write_manifest(old, {k: v for k, v in manifest.items() if k != "files"})
    settings = Settings(model=str(old), database_url=f"sqlite:///{tmp_path / 'old.db'}")
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/explain", content=photo)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "explanation_unavailable"
        message = response.json()["error"]["message"]
        assert "optimize" in message and str(tmp_path) not in message  # no server path leaks
        assert client.post("/v1/predict", content=photo).status_code == 200
