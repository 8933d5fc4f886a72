"""The shipped bundle in models/default: verifies, is deployable and scores real photos."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ai_photo_detector.bundle import load_bundle
from ai_photo_detector.inference import OnnxDetector
from ai_photo_detector.prediction import predict_files
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from conftest import SHIPPED_MODEL

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def test_shipped_bundle_verifies_and_passed_its_gates() -> None:
    manifest = load_bundle(SHIPPED_MODEL).manifest
    assert manifest.deployable and manifest.gates.passed
    assert manifest.labels == ["ai", "real"]
    assert manifest.metrics["roc_auc"] >= 0.95
    assert manifest.training["onnx_parity_max_abs_diff"] <= 1e-4
    assert (SHIPPED_MODEL / "MODEL_CARD.md").is_file()


@pytest.mark.skipif(not DATASETS.is_dir(), reason="needs ../shared/datasets")
def test_shipped_model_tells_real_from_ai_on_sample_photos() -> None:
    detector = OnnxDetector(load_bundle(SHIPPED_MODEL))
    settings = Settings()
    correct = total = 0
    for source in ("shoes-midjourney", "diffusiondb-coco"):
        for label in ("real", "ai"):
            paths = sorted((DATASETS / source / label).iterdir())[:10]
            for result in predict_files(detector, paths, settings):
                total += 1
                correct += result["label"] == label
    assert total == 40
    assert correct / total >= 0.85


def test_service_starts_with_the_shipped_model_on_defaults() -> None:
    with TestClient(create_app(Settings())) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v1/models").json()["models"][0]["version"] == "1.0.0"
