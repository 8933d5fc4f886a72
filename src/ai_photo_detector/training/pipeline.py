"""Folders of labelled images in, an evaluated, calibrated, verified bundle out."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ai_photo_detector import bundle as bundle_io
from ai_photo_detector.calibration import fit_temperature, lower_band_for_fnr, threshold_for_fpr
from ai_photo_detector.data.discovery import Sample, counts, discover, fingerprint, labels_of
from ai_photo_detector.data.scan import scan
from ai_photo_detector.data.splits import split_samples
from ai_photo_detector.data.validate import build_report
from ai_photo_detector.data.validate import write_report as write_data_report
from ai_photo_detector.evaluation import evaluate, quality_gate_failures, write_report
from ai_photo_detector.imaging import PreprocessSpec, decode_image, to_model_input
from ai_photo_detector.inference import OnnxDetector, decide_label, softmax
from ai_photo_detector.scoring import ScoredSet, score_samples
from ai_photo_detector.settings import Settings, TrainingSettings
from ai_photo_detector.training.dataset import ImageDataset
from ai_photo_detector.training.export import check_parity, export_onnx
from ai_photo_detector.training.loop import EpochResult, TrainResult, train
from ai_photo_detector.training.model import Detector, build_detector
from ai_photo_detector.training.tracking import log_run

# Progress hook: (phase name, total units) -> advance(units) callable.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def _no_progress(name: str, total: int) -> Callable[[int], None]:
    return lambda units: None


@dataclass
class TrainingOutcome:
    bundle_dir: Path
    run_dir: Path
    manifest: bundle_io.Manifest
    report: dict[str, Any]
    gate_failures: list[str]
    train_result: TrainResult


def _calibration(
    scored: ScoredSet, labels: list[str], ai_label: str, settings: Settings
) -> dict[str, Any]:
    targets = scored.targets(labels)
    ai_index = labels.index(ai_label)
    temperature = fit_temperature(scored.logits, targets)
    p_ai = softmax(scored.logits, temperature)[:, ai_index]
    real_mask = np.asarray([s.label == settings.data.real_label for s in scored.samples])
    negatives = p_ai[real_mask] if real_mask.any() else p_ai[targets != ai_index]
    positives = p_ai[targets == ai_index]
    threshold = threshold_for_fpr(negatives, settings.calibration.target_fpr)
    real_below = min(threshold, lower_band_for_fnr(positives, settings.calibration.uncertain_fnr))
    return {
        "temperature": temperature,
        "threshold": threshold,
        "bands": {"real_below": real_below, "ai_from": threshold},
        "target_fpr": settings.calibration.target_fpr,
        "uncertain_fnr": settings.calibration.uncertain_fnr,
        "validation_fpr": float((negatives >= threshold).mean()) if negatives.size else 0.0,
        "validation_tpr": float((positives >= threshold).mean()) if positives.size else 0.0,
    }


def _drift_reference(
    scored: ScoredSet,
    calibration: dict[str, Any],
    labels: list[str],
    ai_index: int,
    size: int,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray]:
    rng = np.random.default_rng(seed)
    count = len(scored.samples)
    keep = np.sort(rng.choice(count, size=min(size, count), replace=False))
    probs = softmax(scored.logits[keep], calibration["temperature"])
    p_ai = probs[:, ai_index]
    predicted = [decide_label(row, ai_index, calibration["threshold"], labels) for row in probs]
    reference = {
        "scores": [float(v) for v in p_ai],
        "labels": predicted,
        "image_stats": {
            name: [float(v) for v in values[keep]] for name, values in scored.stats.items()
        },
        "size": len(keep),
    }
    return reference, scored.embeddings[keep].astype(np.float16)


def _parity_batch(samples: list[Sample], spec: PreprocessSpec, count: int = 8) -> np.ndarray:
    arrays = [
        to_model_input(decode_image(s.path.read_bytes(), spec).image, spec) for s in samples[:count]
    ]
    return np.stack(arrays).astype(np.float32)


def run_training(
    data_paths: list[str | Path],
    settings: Settings,
    *,
    name: str = "ai-photo-detector",
    version: str | None = None,
    out_dir: Path | None = None,
    progress: ProgressFactory = _no_progress,
    log: Callable[[str], None] = print,
) -> TrainingOutcome:
    version = version or datetime.now(UTC).strftime("%Y%m%d.%H%M%S")
    run_dir = Path(out_dir or settings.training.output_dir) / f"{name}-{version}"
    bundle_dir = run_dir / "bundle"
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)

    samples = discover(list(data_paths), settings.data.extensions)
    advance = progress("scanning images", len(samples))
    images = scan(samples, on_progress=lambda: advance(1))
    data_report = build_report(images, settings.data)
    write_data_report(data_report, run_dir)
    for finding in data_report["findings"]:
        log(f"[{finding['level']}] {finding['message']}")
    usable = [img.sample for img in images if img.ok]
    labels = labels_of(usable)
    ai_label = settings.data.ai_label
    if ai_label not in labels:
        raise ValueError(f"no images labelled '{ai_label}' (labels found: {labels})")
    splits = split_samples(
        images,
        val_fraction=settings.data.val_fraction,
        test_fraction=settings.data.test_fraction,
        seed=settings.data.split_seed,
        near_duplicate_distance=settings.data.near_duplicate_distance,
    )
    (run_dir / "splits.json").write_text(
        json.dumps({k: [str(s.path) for s in v] for k, v in splits.items()}, indent=0) + "\n"
    )
    log("split sizes: " + ", ".join(f"{k}={len(v)}" for k, v in splits.items()))
    for split_name in ("train", "val", "test"):
        if {s.label for s in splits[split_name]} != set(labels):
            raise ValueError(f"the {split_name} split lacks some labels; add more images")

    spec = PreprocessSpec(input_size=settings.imaging.input_size)
    tset = settings.training
    model = build_detector(tset.backbone, len(labels), tset.pretrained, tset.weights_path)
    train_set = ImageDataset(splits["train"], labels, spec, tset.augment, seed=tset.seed)
    val_set = ImageDataset(splits["val"], labels, spec)
    epochs_bar = progress("training (images)", len(splits["train"]) * tset.epochs)

    def on_epoch(result: EpochResult) -> None:
        log(
            f"epoch {result.epoch}: train loss {result.train_loss:.4f}, val loss "
            f"{result.val_loss:.4f}, val AUC {result.val_auc:.4f}, "
            f"val acc {result.val_accuracy:.4f}"
        )

    train_result = train(
        model,
        train_set,
        val_set,
        labels.index(ai_label),
        tset,
        on_epoch=on_epoch,
        on_batch=epochs_bar,
    )

    model_path = bundle_dir / bundle_io.MODEL_FILE
    export_onnx(model, model_path, spec.input_size, tset.onnx_opset)
    parity = check_parity(
        model, model_path, _parity_batch(splits["val"], spec), tset.parity_tolerance
    )
    log(f"ONNX parity with PyTorch: max abs difference {parity:.2e}")

    # Calibrate on validation through the exported graph: the numbers serving will see.
    provisional = _provisional_manifest(name, version, labels, ai_label, spec, model, tset)
    detector = OnnxDetector(_as_bundle(bundle_dir, provisional))
    advance = progress("scoring validation", len(splits["val"]))
    val_scored = score_samples(detector, splits["val"], with_stats=True, on_progress=advance)
    calibration = _calibration(val_scored, labels, ai_label, settings)
    reference, embeddings = _drift_reference(
        val_scored,
        calibration,
        labels,
        labels.index(ai_label),
        tset.drift_reference_size,
        tset.seed,
    )
    np.savez_compressed(bundle_dir / bundle_io.DRIFT_FILE, embeddings=embeddings)
    digests = {img.sample.path: img.sha256 for img in images}
    fields = {
        **provisional,
        "calibration": calibration,
        "drift_reference": reference,
        "dataset": {
            "fingerprint": fingerprint(usable, digests),
            "sources": counts(usable),
            "splits": {k: len(v) for k, v in splits.items()},
        },
        "training": {
            "best_epoch": train_result.best_epoch,
            "best_val_auc": train_result.best_val_auc,
            "epochs_run": len(train_result.history),
            "onnx_parity_max_abs_diff": parity,
            "settings": tset.model_dump(mode="json"),
            "data_paths": [str(p) for p in data_paths],
        },
    }
    bundle_io.write_manifest(bundle_dir, fields)
    detector = OnnxDetector(bundle_io.load_bundle(bundle_dir))
    advance = progress(
        "evaluating test", len(splits["test"]) * (1 + len(settings.evaluation.robustness))
    )
    report = evaluate(detector, splits["test"], settings, on_progress=advance)
    report["data_findings"] = data_report["findings"]
    failures = quality_gate_failures(report, settings)
    report_files = write_report(report, bundle_dir)
    metrics = {k: v for k, v in report["overall"].items() if k != "confusion_matrix"}
    metrics["robustness"] = {r["condition"]: r["roc_auc"] for r in report["robustness"]}
    metrics["per_source_roc_auc"] = {k: v["roc_auc"] for k, v in report["per_source"].items()}
    fields.update(
        metrics=metrics,
        gates={"passed": not failures, "failures": failures},
        deployable=not failures,
    )
    manifest = bundle_io.write_manifest(bundle_dir, fields)
    bundle_io.load_bundle(bundle_dir)  # the final bundle must verify
    if settings.mlflow.enabled:
        log_run(settings, name, version, train_result, report, bundle_dir, report_files)
    return TrainingOutcome(bundle_dir, run_dir, manifest, report, failures, train_result)


def _provisional_manifest(
    name: str,
    version: str,
    labels: list[str],
    ai_label: str,
    spec: PreprocessSpec,
    model: Detector,
    tset: TrainingSettings,
) -> dict[str, Any]:
    """Manifest fields known before calibration; the rest are filled in as they are measured."""
    with torch.no_grad():
        features = model(torch.zeros(1, 3, spec.input_size, spec.input_size))[1]
    return {
        "name": name,
        "version": version,
        "labels": labels,
        "ai_label": ai_label,
        "backbone": tset.backbone,
        "preprocessing": spec.model_dump(mode="json"),
        "calibration": {
            "temperature": 1.0,
            "threshold": 0.5,
            "bands": {"real_below": 0.5, "ai_from": 0.5},
            "target_fpr": 0.0,
            "uncertain_fnr": 0.0,
            "validation_fpr": 0.0,
            "validation_tpr": 0.0,
        },
        "onnx": {
            "opset": tset.onnx_opset,
            "feature_shape": list(features.shape[1:]),
            "embedding_size": model.num_features,
        },
        "explain": {"head_weight_shape": list(model.head.weight.shape)},
        "metrics": {},
        "gates": {"passed": False, "failures": ["not evaluated yet"]},
        "deployable": False,
        "dataset": {"fingerprint": "", "sources": {}, "splits": {}},
        "drift_reference": {"scores": [], "labels": [], "image_stats": {}, "size": 0},
        "files": {bundle_io.MODEL_FILE: ""},
    }


def _as_bundle(folder: Path, fields: dict[str, Any]) -> bundle_io.Bundle:
    """An in-memory bundle over a folder still being built (no checksums yet)."""
    return bundle_io.Bundle(folder, bundle_io.Manifest.model_validate(fields))
