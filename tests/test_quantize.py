"""The static INT8 variant of a fine-tuned bundle: its own calibration, gates and stated cost."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from ai_photo_detector.bundle import load_bundle
from ai_photo_detector.cli import app
from ai_photo_detector.inference import OnnxDetector, class_activation_maps

pytest.importorskip("torch")


def test_quantize_writes_a_verified_batch_independent_int8_bundle(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "settings.yaml"
    config.write_text(
        "mlflow: {enabled: false}\n"
        "gates: {min_roc_auc: 0.6, max_ece: 0.5, max_robust_auc_drop: 0.5}\n"
    )
    result = CliRunner().invoke(
        app, ["quantize", str(trained.run_dir), "--images", "16", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "cost" in result.output
    bundle = load_bundle(trained.run_dir / "bundle-int8")
    manifest = bundle.manifest
    assert manifest.name.endswith("-int8") and manifest.probe is not None
    assert manifest.training["quantization"]["calibration_images"] == 16
    assert (
        bundle.model_path.stat().st_size < 0.4 * (trained.bundle_dir / "model.onnx").stat().st_size
    )
    detector = OnnxDetector(bundle)
    size = manifest.preprocessing.input_size
    images = np.random.default_rng(0).uniform(-1, 1, (5, 3, size, size)).astype(np.float32)
    batched = detector.run(images, with_features=True)
    alone = detector.run(images[:1]).logits[0]
    assert np.abs(batched.logits[0] - alone).max() <= 1e-5  # static ranges: no batch effect
    assert batched.features is not None
    maps = class_activation_maps(batched.features, *bundle.head())
    np.testing.assert_allclose(maps.mean(axis=(2, 3)), batched.logits, atol=1e-4)


def test_the_int8_variant_keeps_its_float_models_source_gate(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A float model that fails on held-out sources cannot become deployable by quantizing."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained.run_dir, run, ignore=shutil.ignore_patterns("bundle-int8"))
    chance = [
        {
            "source": source,
            "labels": ["ai"] * 10 + ["real"] * 10,
            "logits": [[0.0, 0.0]] * 20,
            "unfamiliar": [False] * 20,
            "paths": [f"/{source}/{i}.jpg" for i in range(20)],
        }
        for source in ("shop-a", "shop-b")
    ]
    (run / "held_out.json").write_text(json.dumps(chance))
    config = tmp_path / "settings.yaml"
    config.write_text(
        "mlflow: {enabled: false}\n"
        "gates: {min_roc_auc: 0.6, max_ece: 0.5, max_robust_auc_drop: 0.5}\n"
    )
    result = CliRunner().invoke(
        app, ["quantize", str(run), "--images", "16", "--config", str(config)]
    )
    assert result.exit_code == 1, result.output
    assert "leave-one-source-out" in result.output
    manifest = load_bundle(run / "bundle-int8").manifest
    assert manifest.deployable is False
