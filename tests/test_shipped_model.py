"""The shipped bundles: the default verifies, passed its gates (leave-one-source-out included),
scores its recorded test split, and starts the service on embedded defaults."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ai_photo_detector.cli.file_predictions import predict_files
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from conftest import FAST_MODEL, SHIPPED_MODEL

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
FAST_INT8 = FAST_MODEL.with_name("fast-int8")
SHARED_SOURCES = {"shoes-midjourney", "diffusiondb-coco", "playground-mixed", "chatgpt-gemini"}


def test_shipped_bundle_verifies_and_passed_its_gates() -> None:
    manifest = load_bundle(SHIPPED_MODEL).manifest
    assert manifest.deployable and manifest.gates.passed
    assert manifest.labels == ["ai", "real"]
    assert manifest.backbone == "clip_vit_b16" and manifest.encoder is not None
    assert manifest.metrics["roc_auc"] >= 0.99  # held-out images of its training sources
    assert manifest.calibration.fitted_on == "out_of_source"
    loso = manifest.metrics["leave_one_source_out"]
    assert {row["source"] for row in loso["rows"]} == SHARED_SOURCES
    assert loso["summary"]["pooled_ai_band_fpr"] <= 0.05
    measurable = [row for row in loso["rows"] if row["real"] >= 20]  # calibration.min_source_reals
    assert len(measurable) >= 3 and all(row["ai_band_fpr"] <= 0.05 for row in measurable)
    assert (SHIPPED_MODEL / "MODEL_CARD.md").is_file() and (FAST_MODEL / "MODEL_CARD.md").is_file()
    # Static INT8 on OpenVINO: batch-independent, so the service micro-batches it; 7-bit
    # weights, so CPUs without VNNI compute it too, checked by the probe embedding's direction.
    recipe = manifest.encoder.recipe
    assert (recipe.precision, recipe.runtime, recipe.weight_bits) == ("static_int8", "openvino", 7)
    assert manifest.onnx.batch_independent and manifest.probe is not None
    assert manifest.probe.fallback_logits is not None and manifest.probe.min_cosine is not None


def test_the_fast_int8_twin_passed_its_own_gates_on_the_fast_models_test_split() -> None:
    fast, int8 = load_bundle(FAST_MODEL).manifest, load_bundle(FAST_INT8).manifest
    assert int8.deployable and int8.gates.passed
    assert int8.training["quantization"]["float_bundle"] == f"{fast.name} {fast.version}"
    assert int8.dataset == fast.dataset  # trained on the same images, scored on the same split
    cost = json.loads((FAST_INT8 / "evaluation.json").read_text())["quantization"]
    assert cost["float_roc_auc"] == fast.metrics["roc_auc"]
    assert cost["roc_auc_cost"] <= Settings().gates.max_quantization_auc_cost
    assert (FAST_INT8 / "MODEL_CARD.md").is_file()
    assert "7-bit" in int8.training["quantization"]["method"]  # no overflow without VNNI
    assert int8.probe is not None and int8.probe.min_cosine is not None


@pytest.mark.skipif(not DATASETS.is_dir(), reason="needs ../shared/datasets")
def test_shipped_model_tells_real_from_ai_on_its_recorded_test_split() -> None:
    """Only images of the training run's test split: never trained, calibrated or selected on."""
    listed = (SHIPPED_MODEL / "test_split.txt").read_text().splitlines()
    test = [DATASETS / line for line in listed if line and not line.startswith("#")]
    picked = []
    for source in ("shoes-midjourney", "diffusiondb-coco"):
        for label in ("real", "ai"):
            picked += [p for p in test if p.parts[-3:-1] == (source, label)][:10]
    detector = OnnxDetector(load_bundle(SHIPPED_MODEL))
    results = list(predict_files(detector, picked, Settings()))
    assert len(results) == 40
    correct = sum(r["label"] == path.parent.name for r, path in zip(results, picked, strict=True))
    assert correct / len(results) >= 0.85


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_service_starts_with_the_shipped_model_and_abstains_on_unfamiliar_input() -> None:
    from skimage import data

    with TestClient(create_app(Settings())) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v1/models").json()["models"][0]["version"] == "2.3.0"
        for name, picture in (
            ("noise", np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)),
            ("checkerboard", data.checkerboard()),
            ("printed text", data.text()),
        ):
            answer = client.post("/v1/predict", content=_jpeg(picture)).json()
            assert answer["band"] == "uncertain", name
            assert "unfamiliar" in answer["reasons"], name
        photo = client.post("/v1/predict", content=_jpeg(data.astronaut())).json()
        assert "unfamiliar" not in photo["reasons"]  # a photograph like the training data's
