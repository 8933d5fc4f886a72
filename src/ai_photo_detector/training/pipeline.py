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

from ai_photo_detector.data.discovery import (
    DatasetError,
    counts,
    discover,
    fingerprint,
    labels_of,
)
from ai_photo_detector.data.scan import scan
from ai_photo_detector.data.splits import split_digest, split_samples
from ai_photo_detector.data.validate import build_report
from ai_photo_detector.data.validate import write_report as write_data_report
from ai_photo_detector.evaluation.finalize import finish_bundle
from ai_photo_detector.evaluation.made_from import save_held_out
from ai_photo_detector.image_stats import STATS_BASIS
from ai_photo_detector.model import bundle as bundle_io
from ai_photo_detector.model.familiarity import reference_of
from ai_photo_detector.progress import ProgressFactory, no_progress
from ai_photo_detector.settings import Settings
from ai_photo_detector.training.backbones import FitHistory, backbone_class
from ai_photo_detector.training.leave_one_out import (
    leave_one_source_out,
    reviewed_kind_of,
    reviewed_mask,
)
from ai_photo_detector.training.tracking import log_run


@dataclass
class TrainingOutcome:
    bundle_dir: Path
    run_dir: Path
    manifest: bundle_io.Manifest
    report: dict[str, Any]
    gate_failures: list[str]
    history: FitHistory


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
    labels = labels_of(samples)
    ai_label = settings.data.ai_label
    if ai_label not in labels:
        raise DatasetError(f"no images labelled '{ai_label}' (labels found: {labels})")
    backbone = backbone_class(settings.training.backbone)(settings, labels, log, progress)
    spec = backbone.preprocessing()
    advance = progress("scanning images", len(samples))
    images = scan(samples, on_progress=lambda: advance(1), view_spec=spec)
    data_report = build_report(images, settings.data)
    write_data_report(data_report, run_dir)
    for finding in data_report["findings"]:
        log(f"[{finding['level']}] {finding['message']}")
    usable = [img.sample for img in images if img.ok]
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
            raise DatasetError(f"the {split_name} split lacks some labels; add more images")

    backbone.calibrate(splits["train"])
    backbone.prepare(usable)
    held_out = leave_one_source_out(backbone, splits, labels, settings, log)
    save_held_out(run_dir, held_out)
    fitted = backbone.fit(splits["train"], splits["val"])
    history = backbone.history(fitted)
    log(f"validation ROC-AUC {history.best_val_auc:.4f} (epoch {history.best_epoch})")
    graph_fields = backbone.export(fitted, bundle_dir, splits["val"])
    train_embeddings = backbone.outputs(fitted, splits["train"]).embeddings
    seen = np.concatenate([train_embeddings, backbone.outputs(fitted, splits["val"]).embeddings])
    reviewed = reviewed_mask(splits["train"] + splits["val"], settings)
    reviewed_kind = reviewed_kind_of(seen, reviewed, settings)
    abstain = settings.abstention
    familiarity = None
    if abstain.enabled:
        familiarity = reference_of(
            train_embeddings, abstain, seen[reviewed] if reviewed.any() else None
        )

    # Calibrate and evaluate through the exported graph: the numbers serving will see.
    digests = {img.sample.path: img.sha256 for img in images}
    details = graph_fields.pop("training_details")
    fields = {
        **_provisional_manifest(name, version, labels, ai_label, spec.model_dump(mode="json")),
        **graph_fields,
        "dataset": {
            "fingerprint": fingerprint(usable, digests),
            "sources": counts(usable),
            "splits": {k: len(v) for k, v in splits.items()},
            "split_digest": split_digest(splits, digests),
        },
        "training": {
            **details,
            "best_val_auc": history.best_val_auc,
            "settings": settings.training.model_dump(mode="json"),
            "data_paths": [str(p) for p in data_paths],
            "data_findings": data_report["findings"],
        },
    }
    finished = finish_bundle(
        bundle_dir,
        fields,
        splits["val"],
        splits["test"],
        settings,
        progress,
        held_out=held_out,
        familiarity=familiarity,
        reviewed_kind=reviewed_kind,
    )
    if settings.mlflow.enabled:
        report, files = finished.report, finished.report_files
        log_run(settings, name, version, history, report, bundle_dir, files)
    return TrainingOutcome(
        bundle_dir, run_dir, finished.manifest, finished.report, finished.failures, history
    )


def _provisional_manifest(
    name: str, version: str, labels: list[str], ai_label: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """Manifest fields known before calibration; the rest are filled in as they are measured."""
    return {
        "name": name,
        "version": version,
        "labels": labels,
        "ai_label": ai_label,
        "preprocessing": spec,
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
        "files": {},
    }
