"""The static INT8 variant of a fine-tuned bundle: its own calibration, gates and stated cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ai_photo_detector.cli import app
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import OnnxDetector, class_activation_maps

pytest.importorskip("torch")


def test_quantize_writes_a_verified_batch_independent_int8_bundle(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "settings.yaml"
    config.write_text(
        "mlflow: {enabled: false}\n"
        "gates: {min_roc_auc: 0.6, max_ece: 0.5, max_robust_auc_drop: 0.5,"
        " max_quantization_auc_cost: 1.0}\n"
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


TRAINED_WITH = (  # the data settings of conftest.quick_settings: the split is made again alike
    "mlflow: {enabled: false}\n"
    "data: {val_fraction: 0.25, test_fraction: 0.25}\n"
    # 12 test images: one flipped pair costs 0.03 of ROC-AUC; the cost gate has its own test
    "gates: {min_roc_auc: 0.6, max_ece: 0.5, max_robust_auc_drop: 0.5,"
    " max_quantization_auc_cost: 1.0}\n"
)


def test_a_bundle_folder_is_quantized_on_its_split_made_again(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A shipped bundle has no run folder: its split is made again from the data it names."""
    import shutil

    bundle = shutil.copytree(trained.bundle_dir, tmp_path / "fast")
    config = tmp_path / "settings.yaml"
    config.write_text(TRAINED_WITH)
    result = CliRunner().invoke(
        app, ["quantize", str(bundle), "--images", "16", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    variant = load_bundle(tmp_path / "fast-int8")
    float_manifest = load_bundle(bundle).manifest
    assert variant.manifest.dataset == float_manifest.dataset
    report = json.loads((variant.path / "evaluation.json").read_text())
    assert report["overall"]["count"] == float_manifest.dataset.splits["test"]
    cost = report["quantization"]
    assert cost["float_roc_auc"] == float_manifest.metrics["roc_auc"]
    assert cost["roc_auc_cost"] == pytest.approx(
        cost["float_roc_auc"] - report["overall"]["roc_auc"]
    )
    assert "INT8 variant: test ROC-AUC" in (variant.path / "evaluation.md").read_text()

    # Re-calibrating the variant keeps its cost reported (and gated).
    result = CliRunner().invoke(app, ["recalibrate", str(variant.path), "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads((variant.path / "evaluation.json").read_text())
    assert report["quantization"]["float_roc_auc"] == float_manifest.metrics["roc_auc"]

    # A card written beside the variant survives re-quantizing; the float bundle is never
    # overwritten, nor a folder holding it.
    (variant.path / "MODEL_CARD.md").write_text("our card\n")
    result = CliRunner().invoke(
        app, ["quantize", str(bundle), "--images", "16", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert (variant.path / "MODEL_CARD.md").read_text() == "our card\n"
    for out in (bundle, tmp_path):
        result = CliRunner().invoke(
            app, ["quantize", str(bundle), "--out", str(out), "--config", str(config)]
        )
        assert result.exit_code == 2 and "overlaps" in result.output
    assert load_bundle(bundle).manifest == float_manifest


def test_a_split_that_cannot_be_made_again_is_refused(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from ai_photo_detector.model.bundle import write_manifest

    bundle = shutil.copytree(trained.bundle_dir, tmp_path / "fast")
    assert load_bundle(bundle).manifest.dataset.split_digest is not None
    for other in ("{}", "{val_fraction: 0.25, test_fraction: 0.25, split_seed: 7}"):
        settings = tmp_path / "other.yaml"
        settings.write_text(f"mlflow: {{enabled: false}}\ndata: {other}\n")
        result = CliRunner().invoke(app, ["quantize", str(bundle), "--config", str(settings)])
        assert result.exit_code == 2 and "dataset_invalid" in result.output
        assert "not the one it was trained on" in result.output

    # One image fewer under the data paths: not the images it was trained on.
    data = Path(load_bundle(bundle).manifest.training["data_paths"][0])
    changed = shutil.copytree(data, tmp_path / "changed")
    next((changed / "real").iterdir()).unlink()
    fields = json.loads((bundle / "manifest.json").read_text())
    fields["training"]["data_paths"] = [str(changed)]
    write_manifest(bundle, {k: v for k, v in fields.items() if k != "files"})
    config = tmp_path / "settings.yaml"
    config.write_text(TRAINED_WITH)
    result = CliRunner().invoke(app, ["quantize", str(bundle), "--config", str(config)])
    assert result.exit_code == 2 and "not the ones this bundle was trained on" in result.output
    assert not (tmp_path / "fast-int8").exists()


def test_recalibrating_a_bundle_folder_stamps_the_new_version(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    bundle = shutil.copytree(trained.bundle_dir, tmp_path / "fast")
    before = load_bundle(bundle).manifest
    config = tmp_path / "settings.yaml"
    config.write_text(TRAINED_WITH + "calibration: {ai_band_fpr: 0.3}\n")
    result = CliRunner().invoke(
        app, ["recalibrate", str(bundle), "--config", str(config), "--version", "test.1"]
    )
    assert result.exit_code == 0, result.output
    after = load_bundle(bundle).manifest
    assert after.version == "test.1" and after.calibration.ai_band_fpr == 0.3
    assert after.calibration.fitted_on == "validation"  # a bundle keeps no folds' predictions
    assert after.metrics["roc_auc"] == pytest.approx(before.metrics["roc_auc"])


@pytest.mark.parametrize(("cost", "fails"), [(0.004, False), (0.02, True)])
def test_the_quantization_cost_is_gated(cost: float, fails: bool) -> None:
    from ai_photo_detector.evaluation.report import quality_gate_failures
    from ai_photo_detector.settings import Settings

    report = {
        "overall": {"roc_auc": 0.97, "ece": 0.01},
        "robustness": [],
        "quantization": {"float_roc_auc": 0.97 + cost, "roc_auc_cost": cost},
    }
    failures = quality_gate_failures(report, Settings())
    assert bool(failures) is fails
    assert all("quantisation costs" in failure for failure in failures)


def test_a_bundle_older_than_the_split_digest_is_checked_by_its_test_roc_auc(  # type: ignore[no-untyped-def]
    trained, tmp_path
) -> None:
    import shutil

    from ai_photo_detector.model.bundle import write_manifest

    bundle = shutil.copytree(trained.bundle_dir, tmp_path / "old")
    fields = json.loads((bundle / "manifest.json").read_text())
    del fields["dataset"]["split_digest"]  # as written before the digest was recorded
    fields["metrics"]["roc_auc"] -= 0.01  # a split that scores otherwise is not its split
    write_manifest(bundle, {k: v for k, v in fields.items() if k != "files"})
    config = tmp_path / "settings.yaml"
    config.write_text(TRAINED_WITH)
    result = CliRunner().invoke(app, ["recalibrate", str(bundle), "--config", str(config)])
    assert result.exit_code == 2 and "its test ROC-AUC there is" in result.output

    fields["metrics"]["roc_auc"] += 0.01
    write_manifest(bundle, {k: v for k, v in fields.items() if k != "files"})
    result = CliRunner().invoke(app, ["recalibrate", str(bundle), "--config", str(config)])
    assert result.exit_code == 0, result.output


def test_a_bundle_calibrated_out_of_source_needs_its_run_folder(frozen_bundle, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Its folds' predictions live in the run folder; without them the source-level gate
    could not be applied again."""
    import shutil

    bundle = shutil.copytree(frozen_bundle, tmp_path / "frozen")
    assert load_bundle(bundle).manifest.calibration.fitted_on == "out_of_source"
    result = CliRunner().invoke(app, ["recalibrate", str(bundle)])
    assert result.exit_code == 2 and "pass the run folder" in result.output
