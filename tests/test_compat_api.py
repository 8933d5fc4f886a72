"""The opt-in v1.0 compatibility routes (server.compat_v1): a client written for the original
"AI Product Photo Detector" v1.0 works unchanged against this service, answered by the same
scoring path, logging, auth and errors as /v1."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from ai_photo_detector.model.bundle import Bands, load_bundle, write_manifest
from ai_photo_detector.persistence.schema import Prediction
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.serving.api.routes.compat import confidence_of, prediction_of
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings
from conftest import SHIPPED_MODEL
from helpers import encode, patterned_image, smooth_image

PREDICT_KEY = "apd_compat_test_predict_key_0123456789"
V1_FIELDS = {"prediction", "probability", "confidence", "inference_time_ms", "model_version"}
FAMILIAR = "familiar"  # the version of the shipped model that knows every photo (below)


# --- a v1.0 integrator's client, as written against the original API -------------------------


@dataclass(frozen=True)
class Verdict:
    is_ai: bool
    probability: float
    confidence: str
    latency_ms: float
    model_version: str


def v1_check_photo(session: Any, path: Path) -> Verdict:
    """requests-style: ``session.post(url, files={"file": ...})``, then the v1.0 fields."""
    with path.open("rb") as f:
        response = session.post("/predict", files={"file": (path.name, f, "image/jpeg")})
    response.raise_for_status()
    result = response.json()
    return Verdict(
        is_ai=result["prediction"] == "ai_generated",
        probability=float(result["probability"]),
        confidence=result["confidence"],
        latency_ms=float(result["inference_time_ms"]),
        model_version=result["model_version"],
    )


def v1_check_photos(session: Any, paths: list[Path]) -> dict[str, Any]:
    files = [("files", (p.name, p.open("rb"), "image/jpeg")) for p in paths]
    try:
        response = session.post("/predict/batch", files=files)
    finally:
        for _, (_, f, _) in files:
            f.close()
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def v1_explain_photo(session: Any, path: Path) -> tuple[Verdict, Image.Image]:
    with path.open("rb") as f:
        response = session.post("/predict/explain", files={"file": (path.name, f, "image/jpeg")})
    response.raise_for_status()
    result = response.json()
    heatmap = Image.open(io.BytesIO(base64.b64decode(result["heatmap_base64"])))
    verdict = Verdict(
        result["prediction"] == "ai_generated",
        float(result["probability"]),
        result["confidence"],
        float(result["inference_time_ms"]),
        result["model_version"],
    )
    return verdict, heatmap


def v1_is_up(session: Any) -> bool:
    health = session.get("/health").json()
    return bool(health["status"] == "healthy" and health["model_loaded"])


# --- fixtures --------------------------------------------------------------------------------


def _settings(tmp: Path, model: Path = SHIPPED_MODEL, **overrides: Any) -> Settings:
    server = {"compat_v1": True, "max_batch_items": 4, **overrides.pop("server", {})}
    return Settings(
        model=str(model),
        database_url=f"sqlite:///{tmp / 'compat.db'}",
        server=server,
        prediction_log={"flush_interval_s": 0.05},
        **overrides,
    )


def _edited(source: Path, target: Path, version: str, **calibration: Any) -> Path:
    """A copy of ``source`` as ``version``: every photo familiar (the synthetic test photos are
    unlike the shipped model's training data, so would all be 'uncertain'), calibration
    fields replaced by ``calibration``."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = version
    manifest["familiarity"]["threshold"] = 1e12
    manifest["calibration"].update(calibration)
    write_manifest(target, {k: v for k, v in manifest.items() if k != "files"})
    return target


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _edited(SHIPPED_MODEL, tmp_path_factory.mktemp("bundle") / "familiar", FAMILIAR)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Iterator[TestClient]:
    settings = _settings(tmp_path_factory.mktemp("compat"), bundle)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(11)
    paths = []
    # Twelve: enough that the shipped model's answers reach every band and confidence.
    for i, make in enumerate([patterned_image, smooth_image] * 6):
        path = folder / f"photo_{i}.jpg"
        path.write_bytes(encode(make(rng, 320), quality=90))
        paths.append(path)
    return paths


def _v1(client: TestClient, path: Path) -> dict[str, Any]:
    response = client.post("/v1/predict", content=path.read_bytes())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _expected(answer: dict[str, Any]) -> tuple[str, str]:
    """v1.0's prediction and confidence for a /v1 answer of the shipped model's bands."""
    bands = load_bundle(SHIPPED_MODEL).manifest.calibration.bands
    band, p = answer["band"], answer["probability"]
    says_ai = answer["label"] == load_bundle(SHIPPED_MODEL).manifest.ai_label
    return prediction_of(band, says_ai), confidence_of(band, p, bands, answer["reasons"])


# --- the mapping ---------------------------------------------------------------------------


def test_mapping_of_bands_to_v1_prediction_and_confidence() -> None:
    bands = Bands(real_below=0.1, ai_from=0.8)
    assert prediction_of("ai", True) == "ai_generated"
    assert prediction_of("real", False) == "real"
    # The model abstained: its own label at the calibrated threshold, with low confidence.
    assert prediction_of("uncertain", True) == "ai_generated"
    assert prediction_of("uncertain", False) == "real"
    assert confidence_of("uncertain", 0.99, bands, ["unfamiliar"]) == "low"
    assert confidence_of("uncertain", 0.5, bands, ["low_margin"]) == "low"
    # ai band [0.8, 1]: high from its midpoint 0.9 up.
    assert confidence_of("ai", 0.9, bands) == "high"
    assert confidence_of("ai", 0.89, bands) == "medium"
    assert confidence_of("ai", 0.8, bands) == "medium"
    # real band [0, 0.1): high below its midpoint 0.05.
    assert confidence_of("real", 0.049, bands) == "high"
    assert confidence_of("real", 0.05, bands) == "medium"
    # Trusted Content Credentials decided 'ai' whatever the probability: decisive.
    assert prediction_of("ai", False) == "ai_generated"
    assert confidence_of("ai", 0.1, bands, ["provenance"]) == "high"


# --- a v1.0 client, unchanged ------------------------------------------------------------------


def test_a_v1_client_works_unchanged(client: TestClient, photos: list[Path]) -> None:
    bands, confidences = set(), set()
    for path in photos:
        verdict = v1_check_photo(client, path)
        answer = _v1(client, path)  # the same photo through /v1: the same model and verdict
        prediction, confidence = _expected(answer)
        assert verdict.is_ai == (prediction == "ai_generated")
        assert verdict.probability == pytest.approx(answer["probability"], abs=1e-6)
        assert verdict.confidence == confidence
        assert verdict.model_version == FAMILIAR == answer["model"]["version"]
        assert verdict.latency_ms > 0
        bands.add(answer["band"])
        confidences.add(verdict.confidence)
    # The photos cover every band and every confidence: each branch of the mapping was used.
    assert bands == {"ai", "real", "uncertain"}
    assert confidences == {"low", "medium", "high"}


def test_predict_answers_exactly_the_v1_fields_and_is_logged(
    client: TestClient, photos: list[Path]
) -> None:
    response = client.post("/predict", files={"file": ("a.jpg", photos[0].read_bytes())})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == V1_FIELDS
    assert body["prediction"] in {"ai_generated", "real"}
    assert body["confidence"] in {"low", "medium", "high"}
    assert 0 <= body["probability"] <= 1
    services = client.app.state.services  # type: ignore[attr-defined]
    assert services.prediction_log.flush()
    request_id = response.headers["x-request-id"]
    with services.store.session() as session:
        rows = session.scalars(select(Prediction).where(Prediction.request_id == request_id)).all()
    assert len(rows) == 1  # logged like a /v1 prediction
    row = rows[0]
    assert row.route == "primary" and row.model_version == body["model_version"]
    assert row.score == pytest.approx(body["probability"])
    assert prediction_of(row.band, row.label == "ai") == body["prediction"]


def test_batch_in_the_v1_shape_with_per_item_errors(
    client: TestClient, photos: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not an image at all")
    paths = [photos[0], broken, photos[1]]
    body = v1_check_photos(client, paths)
    assert set(body) == {
        "results",
        "total",
        "successful",
        "failed",
        "total_inference_time_ms",
        "model_version",
    }
    assert (body["total"], body["successful"], body["failed"]) == (3, 2, 1)
    assert body["model_version"] == FAMILIAR
    assert body["total_inference_time_ms"] > 0
    results = body["results"]
    assert [item["filename"] for item in results] == [p.name for p in paths]
    for path, item in zip((photos[0], photos[1]), (results[0], results[2]), strict=True):
        prediction, confidence = _expected(_v1(client, path))
        assert (item["prediction"], item["confidence"]) == (prediction, confidence)
        assert item["error"] is None and item["error_code"] is None
        assert 0 <= item["probability"] <= 1
    failed = results[1]
    assert failed["prediction"] is None and failed["probability"] is None
    assert failed["confidence"] is None
    assert failed["error_code"] == "unsupported_format" and isinstance(failed["error"], str)


def test_explain_in_the_v1_shape(client: TestClient, photos: list[Path]) -> None:
    verdict, heatmap = v1_explain_photo(client, photos[0])
    answer = client.post("/v1/explain?overlay=false", content=photos[0].read_bytes()).json()
    prediction, confidence = _expected(answer)
    assert verdict.is_ai == (prediction == "ai_generated")
    assert verdict.confidence == confidence
    assert verdict.probability == pytest.approx(answer["probability"], abs=1e-6)
    assert verdict.model_version == FAMILIAR
    assert heatmap.format == "JPEG"
    size = load_bundle(SHIPPED_MODEL).manifest.preprocessing.input_size
    assert heatmap.size == (size, size)
    body = client.post("/predict/explain", content=photos[0].read_bytes()).json()
    assert set(body) == V1_FIELDS | {"heatmap_base64"}


def test_health_in_the_v1_shape(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "model_loaded", "model_version", "uptime_seconds"}
    assert body["status"] == "healthy" and body["model_loaded"] is True
    assert body["model_version"] == FAMILIAR
    assert body["uptime_seconds"] > 0  # counted from the start (0 would mean not counted)
    assert v1_is_up(client)


def test_errors_keep_this_service_shape_and_codes(client: TestClient) -> None:
    for data in (b"", b"<html><body>hi</body></html>", b"\xff\xd8\xff\xe0" + b"\x00" * 64):
        ours = client.post("/v1/predict", content=data)
        for path in ("/predict", "/predict/explain"):
            response = client.post(path, files={"file": ("x.jpg", data, "image/jpeg")})
            assert 400 <= response.status_code < 500, response.text
            assert response.status_code == ours.status_code
            error = response.json()["error"]
            assert error["code"] == ours.json()["error"]["code"]
            assert error["request_id"] == response.headers["x-request-id"]
    too_many = [("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(5)]
    response = client.post("/predict/batch", files=too_many)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_files"


def test_the_routes_are_left_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/predict" in paths
    assert not {"/predict", "/predict/batch", "/predict/explain", "/health"} & set(paths)


# --- abstentions ---------------------------------------------------------------------------


def test_an_uncertain_answer_is_low_confidence(
    tmp_path: Path, bundle: Path, photos: list[Path]
) -> None:
    """A bundle whose 'uncertain' band spans (almost) everything: every answer abstains, and
    v1.0 clients are told so through confidence 'low', whatever the probability."""
    wide = _edited(bundle, tmp_path / "wide", "wide", bands={"real_below": 0.0, "ai_from": 1.0})
    with TestClient(create_app(_settings(tmp_path, wide))) as client:
        for path in photos:
            answer = _v1(client, path)
            assert answer["band"] == "uncertain"
            verdict = v1_check_photo(client, path)
            assert verdict.confidence == "low"
            assert verdict.is_ai == (answer["label"] == "ai")
            assert verdict.probability == pytest.approx(answer["probability"], abs=1e-6)
            assert verdict.model_version == "wide"
        items = v1_check_photos(client, photos[:4])["results"]  # server.max_batch_items
        assert [item["confidence"] for item in items] == ["low"] * 4


# --- off by default, and guarded like /v1 ---------------------------------------------------------


def test_off_by_default_the_routes_are_not_found(tmp_path: Path, photos: list[Path]) -> None:
    settings = Settings(model=str(SHIPPED_MODEL), database_url=f"sqlite:///{tmp_path / 'off.db'}")
    assert settings.server.compat_v1 is False
    with TestClient(create_app(settings)) as client:
        data = photos[0].read_bytes()
        for path in ("/predict", "/predict/batch", "/predict/explain"):
            response = client.post(path, files={"file": ("a.jpg", data, "image/jpeg")})
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
        assert client.get("/health").status_code == 404
        assert client.post("/v1/predict", content=data).status_code == 200


def test_auth_applies_as_on_v1(tmp_path: Path, bundle: Path, photos: list[Path]) -> None:
    keys = [{"id": "shop", "sha256": hash_key(PREDICT_KEY), "scopes": ["predict"]}]
    opened = ["/v2/health/live", "/v2/health/ready", "/metrics", "/health"]
    settings = _settings(
        tmp_path, bundle, environment="production", auth={"keys": keys, "open_paths": opened}
    )
    data = photos[0].read_bytes()
    with TestClient(create_app(settings)) as client:
        anonymous = client.post("/predict", files={"file": ("a.jpg", data)})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "missing_api_key"
        client.headers["Authorization"] = f"Bearer {PREDICT_KEY}"
        assert v1_check_photo(client, photos[0]).model_version == FAMILIAR
        del client.headers["Authorization"]
        assert v1_is_up(client)  # /health listed in auth.open_paths: open, as in v1.0
    (tmp_path / "closed").mkdir()
    closed = _settings(tmp_path / "closed", bundle, environment="production", auth={"keys": keys})
    with TestClient(create_app(closed)) as client:
        response = client.get("/health")  # not open by default: an admin key, like /v2/models
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "missing_api_key"
