"""A full train -> calibrate -> evaluate -> export -> predict run on a tiny built dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import quick_settings
from helpers import build_dataset

torch = pytest.importorskip("torch")

from ai_photo_detector.cli import app  # noqa: E402
from ai_photo_detector.imaging import preprocess_bytes  # noqa: E402
from ai_photo_detector.model.bundle import load_bundle  # noqa: E402
from ai_photo_detector.model.inference import OnnxDetector, verdicts  # noqa: E402
from ai_photo_detector.training.dataset import ImageDataset  # noqa: E402
from ai_photo_detector.training.pipeline import run_training  # noqa: E402


def test_training_produces_a_verified_deployable_bundle(trained) -> None:  # type: ignore[no-untyped-def]
    bundle = load_bundle(trained.bundle_dir)
    manifest = bundle.manifest
    assert manifest.labels == ["ai", "real"] and manifest.ai_label == "ai"
    assert manifest.deployable and manifest.gates.passed
    assert manifest.training["onnx_parity_max_scaled_diff"] <= 1e-4
    assert manifest.calibration.temperature > 0
    bands = manifest.calibration.bands
    assert bands.real_below <= bands.ai_from == manifest.calibration.threshold
    assert manifest.calibration.validation_fpr <= manifest.calibration.target_fpr + 1e-9
    assert manifest.metrics["roc_auc"] >= 0.6
    assert set(manifest.metrics["robustness"]) == {"jpeg95", "jpeg75", "downscale0.5", "blur1"}
    assert len(manifest.drift_reference.scores) == manifest.drift_reference.size > 0
    assert set(manifest.drift_reference.image_stats) >= {"brightness", "sharpness", "jpeg_quality"}
    assert bundle.embedding_reference().shape == (
        manifest.drift_reference.size,
        manifest.onnx.embedding_size,
    )
    for name in ("evaluation.json", "evaluation.md", "roc.png", "reliability.png"):
        assert (trained.bundle_dir / name).is_file()
    assert set(manifest.files) >= {"model.onnx", "drift_reference.npz", "evaluation.json"}
    assert manifest.dataset.fingerprint and manifest.dataset.splits["test"] > 0


def test_report_has_every_metric_and_table(trained) -> None:  # type: ignore[no-untyped-def]
    report = json.loads((trained.bundle_dir / "evaluation.json").read_text())
    overall = report["overall"]
    for key in (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "average_precision",
        "tpr_at_1pct_fpr",
        "ece_uncalibrated",
        "ece",
        "confusion_matrix",
    ):
        assert key in overall
    assert sum(map(sum, overall["confusion_matrix"]["matrix"])) == overall["count"]
    assert list(report["per_source"]) == ["tiny"]
    assert [row["condition"] for row in report["robustness"]] == [
        "jpeg95",
        "jpeg75",
        "downscale0.5",
        "blur1",
    ]
    markdown = (trained.bundle_dir / "evaluation.md").read_text()
    assert "## Robustness" in markdown and "## Per source" in markdown


def test_training_run_is_tracked_in_mlflow(trained) -> None:  # type: ignore[no-untyped-def]
    import mlflow

    tracking = f"sqlite:///{trained.run_dir.parents[1] / 'mlruns.db'}"
    client = mlflow.MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("ai-photo-detector")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["epochs"] == "4"
    assert "test_roc_auc" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "val_auc")
    assert len(history) == len(trained.history.epochs)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/model.onnx" in artifacts and "bundle/manifest.json" in artifacts


def test_training_and_serving_preprocess_identically(trained, tiny_dataset: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = load_bundle(trained.bundle_dir)
    spec = bundle.manifest.preprocessing
    from ai_photo_detector.data.discovery import discover

    samples = discover([tiny_dataset], [".jpg"])[:6]
    dataset = ImageDataset(samples, bundle.manifest.labels, spec)  # no augmentation
    for i, sample in enumerate(samples):
        served, _ = preprocess_bytes(sample.path.read_bytes(), spec)
        trained_input, _ = dataset[i]
        assert np.array_equal(trained_input.numpy(), served)


def test_onnx_verdicts_match_pytorch_probabilities(trained, tiny_dataset: Path) -> None:  # type: ignore[no-untyped-def]
    detector = OnnxDetector(load_bundle(trained.bundle_dir))
    image = sorted((tiny_dataset / "ai").iterdir())[0]
    array, _ = preprocess_bytes(image.read_bytes(), detector.manifest.preprocessing)
    output = detector.run(array[None], with_features=True)
    assert output.features is not None
    # The linear head on pooled features: the class activation map averages to the logits.
    head = np.stack([output.embedding[0]])  # pooled == spatial mean of the feature map
    assert np.allclose(head, output.features.mean(axis=(2, 3)), atol=1e-5)
    verdict = verdicts(output.logits, detector.manifest)[0]
    assert abs(sum(verdict.scores.values()) - 1) < 1e-6
    assert verdict.band in {"real", "uncertain", "ai"}


def test_missed_quality_gate_exits_non_zero_and_is_not_deployable(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    config = tmp_path / "strict.yaml"
    config.write_text(
        "imaging: {input_size: 64}\n"
        "training: {epochs: 1, batch_size: 16, workers: 0}\n"
        "data: {val_fraction: 0.25, test_fraction: 0.25}\n"
        "evaluation: {robustness: [jpeg75]}\n"
        "mlflow: {enabled: false}\n"
        "gates: {min_roc_auc: 1.0, max_ece: 0.0}\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tiny_dataset),
            "--config",
            str(config),
            "--out",
            str(tmp_path),
            "--version",
            "strict",
        ],
    )
    assert result.exit_code == 1, result.output
    manifest = load_bundle(tmp_path / "ai-photo-detector-strict" / "bundle").manifest
    assert manifest.deployable is False and manifest.gates.failures


def test_multi_class_training_needs_no_code_change(tmp_path: Path) -> None:
    data = build_dataset(tmp_path / "multi", per_class=16, extra_labels=("edited",))
    settings = quick_settings(
        tmp_path,
        training={"epochs": 1},
        mlflow={"enabled": False},
        evaluation={"robustness": ["jpeg75"]},
    )
    outcome = run_training([data], settings, version="multi", log=lambda _: None)
    manifest = outcome.manifest
    assert manifest.labels == ["ai", "edited", "real"]
    assert len(outcome.report["overall"]["confusion_matrix"]["matrix"]) == 3
    detector = OnnxDetector(load_bundle(outcome.bundle_dir))
    array, _ = preprocess_bytes(
        sorted((data / "edited").iterdir())[0].read_bytes(), manifest.preprocessing
    )
    verdict = verdicts(detector.run(array[None]).logits, manifest)[0]
    assert set(verdict.scores) == {"ai", "edited", "real"}


def test_recalibrate_refits_bands_without_torch_or_retraining(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained.run_dir, run_dir)
    before = load_bundle(run_dir / "bundle").manifest
    config = tmp_path / "loose.yaml"
    config.write_text(
        "calibration: {target_fpr: 0.4, ai_band_fpr: 0.3, real_band_fnr: 0.3}\n"
        "gates: {min_roc_auc: 0.5, max_ece: 1.0, max_robust_auc_drop: 1.0}\n"
        "evaluation: {robustness: [jpeg75]}\n"
    )
    result = CliRunner().invoke(app, ["recalibrate", str(run_dir), "--config", str(config)])
    assert result.exit_code == 0, result.output
    after = load_bundle(run_dir / "bundle").manifest
    assert after.calibration.target_fpr == 0.4
    assert after.calibration.threshold <= before.calibration.threshold
    assert after.training == before.training and after.version == before.version
    assert after.metrics["roc_auc"] == pytest.approx(before.metrics["roc_auc"])


def test_fine_tuning_draws_a_boosted_source_as_often_as_an_average_group(tmp_path: Path) -> None:
    from collections import Counter

    from ai_photo_detector.data.discovery import Sample
    from ai_photo_detector.imaging import PreprocessSpec
    from ai_photo_detector.training.loop import weighted_sampler

    samples = [Sample(tmp_path / f"b{i}.jpg", ["ai", "real"][i % 2], "base") for i in range(200)]
    samples += [Sample(tmp_path / f"f{i}.jpg", ["ai", "real"][i % 2], "feedback") for i in range(6)]
    dataset = ImageDataset(samples, ["ai", "real"], PreprocessSpec(input_size=64))
    settings = quick_settings(tmp_path).training
    assert weighted_sampler(dataset, settings) is None  # nothing asked: plain shuffling
    boosted = settings.model_copy(update={"boosted_sources": ["feedback"], "boost_weight": 1.0})
    sampler = weighted_sampler(dataset, boosted)
    assert sampler is not None
    drawn = Counter(samples[i].source for _ in range(20) for i in sampler)
    # One base group and one feedback group per label, alike in weight: about half each.
    assert 0.4 < drawn["feedback"] / sum(drawn.values()) < 0.6
    # Boosted three times over, the feedback is drawn three times as often as the base.
    stronger = weighted_sampler(dataset, boosted.model_copy(update={"boost_weight": 3.0}))
    assert stronger is not None
    drawn = Counter(samples[i].source for _ in range(20) for i in stronger)
    assert 0.7 < drawn["feedback"] / sum(drawn.values()) < 0.8
