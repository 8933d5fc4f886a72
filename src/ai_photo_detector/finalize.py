"""Turn an exported ``model.onnx`` into a finished bundle: calibrate, evaluate, gate.

Everything here runs through ONNX Runtime, so the calibration and the reported metrics are those
of the graph that will be served. It needs no torch: a bundle can be re-calibrated (say, for a
new false-positive target) with the serving install alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector import bundle as bundle_io
from ai_photo_detector.calibration import (
    decision_threshold,
    fit_temperature,
    lower_band_for_fnr,
    threshold_for_fpr,
)
from ai_photo_detector.data.discovery import Sample, discover
from ai_photo_detector.evaluation import evaluate, quality_gate_failures, write_report
from ai_photo_detector.image_stats import STATS_BASIS
from ai_photo_detector.inference import OnnxDetector, decide_label, softmax
from ai_photo_detector.scoring import ScoredSet, score_samples
from ai_photo_detector.settings import Settings

# Progress hook: (phase name, total units) -> advance(units) callable.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def no_progress(name: str, total: int) -> Callable[[int], None]:
    return lambda units: None


@dataclass
class Finished:
    manifest: bundle_io.Manifest
    report: dict[str, Any]
    failures: list[str]
    report_files: list[Path]


def fit_calibration(
    scored: ScoredSet, labels: list[str], ai_label: str, settings: Settings
) -> dict[str, Any]:
    """Temperature, label threshold and bands from validation outputs."""
    targets = scored.targets(labels)
    ai_index = labels.index(ai_label)
    config = settings.calibration
    temperature = fit_temperature(scored.logits, targets)
    p_ai = softmax(scored.logits, temperature)[:, ai_index]
    real_mask = np.asarray([s.label == settings.data.real_label for s in scored.samples])
    negatives = p_ai[real_mask] if real_mask.any() else p_ai[targets != ai_index]
    positives = p_ai[targets == ai_index]
    threshold = decision_threshold(negatives, positives, config.target_fpr)
    ai_from = max(threshold, threshold_for_fpr(negatives, config.ai_band_fpr))
    real_below = min(threshold, lower_band_for_fnr(positives, config.real_band_fnr))
    return {
        "temperature": temperature,
        "threshold": threshold,
        "bands": {"real_below": real_below, "ai_from": ai_from},
        "target_fpr": config.target_fpr,
        "ai_band_fpr": config.ai_band_fpr,
        "real_band_fnr": config.real_band_fnr,
        "validation_fpr": float((negatives >= threshold).mean()) if negatives.size else 0.0,
        "validation_tpr": float((positives >= threshold).mean()) if positives.size else 0.0,
    }


def drift_reference(
    scored: ScoredSet, calibration: dict[str, Any], labels: list[str], ai_index: int, size: int
) -> tuple[dict[str, Any], NDArray[np.float16]]:
    """The validation sample that drift detection compares live traffic against."""
    rng = np.random.default_rng(0)
    count = len(scored.samples)
    keep = np.sort(rng.choice(count, size=min(size, count), replace=False))
    probs = softmax(scored.logits[keep], calibration["temperature"])
    predicted = [decide_label(row, ai_index, calibration["threshold"], labels) for row in probs]
    reference = {
        "scores": [float(v) for v in probs[:, ai_index]],
        "labels": predicted,
        "image_stats": {
            name: [float(v) for v in values[keep]] for name, values in scored.stats.items()
        },
        "image_stats_basis": STATS_BASIS,
        "size": len(keep),
    }
    return reference, scored.embeddings[keep].astype(np.float16)


def _summary_metrics(report: dict[str, Any]) -> dict[str, Any]:
    metrics = {k: v for k, v in report["overall"].items() if k != "confusion_matrix"}
    metrics["robustness"] = {r["condition"]: r["roc_auc"] for r in report["robustness"]}
    metrics["per_source_roc_auc"] = {k: v["roc_auc"] for k, v in report["per_source"].items()}
    return metrics


def finish_bundle(
    bundle_dir: Path,
    fields: dict[str, Any],
    val: list[Sample],
    test: list[Sample],
    settings: Settings,
    progress: ProgressFactory = no_progress,
) -> Finished:
    """Calibrate on ``val``, evaluate on ``test``, apply the gates and write the manifest.

    ``fields`` holds every manifest field known before calibration; the model file must
    already be in ``bundle_dir``.
    """
    provisional = bundle_io.Manifest.model_validate(fields)
    detector = OnnxDetector(bundle_io.Bundle(bundle_dir, provisional))
    advance = progress("scoring validation", len(val))
    val_scored = score_samples(detector, val, with_stats=True, on_progress=advance)
    labels, ai_label = provisional.labels, provisional.ai_label
    calibration = fit_calibration(val_scored, labels, ai_label, settings)
    reference, embeddings = drift_reference(
        val_scored,
        calibration,
        labels,
        labels.index(ai_label),
        settings.training.drift_reference_size,
    )
    np.savez_compressed(bundle_dir / bundle_io.DRIFT_FILE, embeddings=embeddings)
    fields = {**fields, "calibration": calibration, "drift_reference": reference}
    bundle_io.write_manifest(bundle_dir, fields)
    detector = OnnxDetector(bundle_io.load_bundle(bundle_dir))
    conditions = len(settings.evaluation.robustness)
    advance = progress("evaluating test", len(test) * (1 + conditions))
    report = evaluate(detector, test, settings, on_progress=advance)
    failures = quality_gate_failures(report, settings)
    report_files = write_report(report, bundle_dir)
    fields.update(
        metrics=_summary_metrics(report),
        gates={"passed": not failures, "failures": failures},
        deployable=not failures,
    )
    manifest = bundle_io.write_manifest(bundle_dir, fields)
    bundle_io.load_bundle(bundle_dir)  # the finished bundle must verify
    return Finished(manifest, report, failures, report_files)


def recalibrate_run(
    run_dir: Path, settings: Settings, progress: ProgressFactory = no_progress
) -> Finished:
    """Re-fit calibration and re-evaluate a training run's bundle on its own recorded splits."""
    bundle = bundle_io.load_bundle(run_dir / "bundle")
    splits = json.loads((run_dir / "splits.json").read_text())
    data_paths = bundle.manifest.training.get("data_paths", [])
    samples = discover(data_paths, settings.data.extensions)
    by_path = {str(s.path): s for s in samples}
    missing = [p for name in ("val", "test") for p in splits[name] if p not in by_path]
    if missing:
        raise FileNotFoundError(f"{len(missing)} split images are gone, e.g. {missing[0]}")
    fields = bundle.manifest.model_dump(mode="json")
    return finish_bundle(
        bundle.path,
        fields,
        [by_path[p] for p in splits["val"]],
        [by_path[p] for p in splits["test"]],
        settings,
        progress,
    )
