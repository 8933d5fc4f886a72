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
from ai_photo_detector.data.discovery import Sample, counts, discover, fingerprint, labels_of
from ai_photo_detector.data.scan import scan
from ai_photo_detector.data.splits import split_samples
from ai_photo_detector.data.validate import build_report
from ai_photo_detector.data.validate import write_report as write_data_report
from ai_photo_detector.finalize import ProgressFactory, finish_bundle, no_progress
from ai_photo_detector.image_stats import STATS_BASIS
from ai_photo_detector.imaging import PreprocessSpec, decode_image, to_model_input
from ai_photo_detector.settings import Settings, TrainingSettings
from ai_photo_detector.training.dataset import ImageDataset
from ai_photo_detector.training.export import check_parity, export_onnx
from ai_photo_detector.training.graph import save_head
from ai_photo_detector.training.loop import EpochResult, TrainResult, train
from ai_photo_detector.training.model import Detector, build_detector
from ai_photo_detector.training.tracking import log_run


@dataclass
class TrainingOutcome:
    bundle_dir: Path
    run_dir: Path
    manifest: bundle_io.Manifest
    report: dict[str, Any]
    gate_failures: list[str]
    train_result: TrainResult


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
    progress: ProgressFactory = no_progress,
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
    folded = export_onnx(model, model_path, spec.input_size, tset.onnx_opset)
    parity = check_parity(
        model, model_path, _parity_batch(splits["val"], spec), tset.parity_tolerance
    )
    log(f"ONNX parity with PyTorch: max abs difference {parity:.2e}")
    save_head(model_path, bundle_dir)  # read from the exported graph: what serving runs

    # Calibrate and evaluate through the exported graph: the numbers serving will see.
    digests = {img.sample.path: img.sha256 for img in images}
    fields = {
        **_provisional_manifest(name, version, labels, ai_label, spec, model, tset),
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
            "graph_rewrites": {"same_padding_folded": folded},
            "settings": tset.model_dump(mode="json"),
            "data_paths": [str(p) for p in data_paths],
            "data_findings": data_report["findings"],
        },
    }
    finished = finish_bundle(bundle_dir, fields, splits["val"], splits["test"], settings, progress)
    if settings.mlflow.enabled:
        report, files = finished.report, finished.report_files
        log_run(settings, name, version, train_result, report, bundle_dir, files)
    return TrainingOutcome(
        bundle_dir, run_dir, finished.manifest, finished.report, finished.failures, train_result
    )


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
            "ai_band_fpr": 0.0,
            "real_band_fnr": 0.0,
            "validation_fpr": 0.0,
            "validation_tpr": 0.0,
        },
        "onnx": {
            "opset": tset.onnx_opset,
            "feature_shape": list(features.shape[1:]),
            "embedding_size": model.num_features,
        },
        "explain": {
            "head_weight_shape": list(model.head.weight.shape),
            "head_file": bundle_io.HEAD_FILE,
        },
        "metrics": {},
        "gates": {"passed": False, "failures": ["not evaluated yet"]},
        "deployable": False,
        "dataset": {"fingerprint": "", "sources": {}, "splits": {}},
        "drift_reference": {
            "scores": [],
            "labels": [],
            "image_stats": {},
            "image_stats_basis": STATS_BASIS,
            "size": 0,
        },
        "files": {bundle_io.MODEL_FILE: ""},
    }
