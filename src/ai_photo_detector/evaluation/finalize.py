"""Turn an exported ``model.onnx`` into a finished bundle: calibrate, evaluate, gate.

Everything here runs through ONNX Runtime, so the calibration and the reported metrics are those
of the graph that will be served. It needs no torch: a bundle can be re-calibrated (say, for a
new false-positive target) with the serving install alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.evaluation.by_source import HeldOutSource, source_table
from ai_photo_detector.evaluation.report import evaluate, quality_gate_failures, write_report
from ai_photo_detector.evaluation.scoring import ScoredSet, score_samples
from ai_photo_detector.image_stats import STATS_BASIS
from ai_photo_detector.model import bundle as bundle_io
from ai_photo_detector.model.calibration import (
    ai_band_floor,
    decision_threshold,
    fit_temperature,
    lower_band_for_fnr,
)
from ai_photo_detector.model.encoders import probe_input
from ai_photo_detector.model.familiarity import FamiliarityReference, threshold_for
from ai_photo_detector.model.inference import OnnxDetector, decide_label, softmax
from ai_photo_detector.model.onnx_graph import quantises_activations
from ai_photo_detector.model.reviewed_kind import ReviewedKind
from ai_photo_detector.model.runtimes import make_session
from ai_photo_detector.progress import ProgressFactory, no_progress
from ai_photo_detector.settings import Settings


@dataclass
class Finished:
    manifest: bundle_io.Manifest
    report: dict[str, Any]
    failures: list[str]
    report_files: list[Path]


@dataclass
class CalibrationData:
    """Outputs calibration is fitted on: out-of-source predictions (each image scored by a
    model fitted without its source) when there are several sources, else validation."""

    logits: NDArray[np.float32]
    labels: list[str]  # true label per row
    sources: list[str]  # source per row
    fitted_on: str  # "out_of_source" or "validation"

    @classmethod
    def from_scored(cls, scored: ScoredSet) -> CalibrationData:
        return cls(
            scored.logits,
            [s.label for s in scored.samples],
            [s.source for s in scored.samples],
            "validation",
        )


def fit_calibration(
    data: CalibrationData,
    labels: list[str],
    ai_label: str,
    settings: Settings,
    reviewed_kind: bool = False,
) -> dict[str, Any]:
    """Temperature, label threshold and bands. The 'ai' band is set so that on every source
    with enough real photos at most ``calibration.ai_band_fpr`` of them reach it; with a
    ``reviewed_kind`` (and ``calibration.reviewed_ai_band_fpr`` set), the same way at that
    share for photos of the kind (``bands.ai_from_reviewed``)."""
    index = {label: i for i, label in enumerate(labels)}
    targets = np.asarray([index[label] for label in data.labels], dtype=np.int64)
    ai_index = labels.index(ai_label)
    config = settings.calibration
    temperature = fit_temperature(data.logits, targets)
    p_ai = softmax(data.logits, temperature)[:, ai_index]
    real_mask = np.asarray([label == settings.data.real_label for label in data.labels])
    if not real_mask.any():
        real_mask = targets != ai_index
    negatives = p_ai[real_mask]
    positives = p_ai[targets == ai_index]
    threshold = decision_threshold(negatives, positives, config.target_fpr)
    sources = np.asarray(data.sources)[real_mask]
    floor = ai_band_floor(
        negatives, sources, config.ai_band_fpr, config.min_source_reals, config.ai_band_rule
    )
    ai_from = max(threshold, floor)
    real_below = min(threshold, lower_band_for_fnr(positives, config.real_band_fnr))
    bands = {"real_below": real_below, "ai_from": ai_from}
    loose = config.reviewed_ai_band_fpr if reviewed_kind else None
    if loose is not None:
        floor = ai_band_floor(
            negatives, sources, loose, config.min_source_reals, config.ai_band_rule
        )
        bands["ai_from_reviewed"] = min(ai_from, max(threshold, floor))
    return {
        "temperature": temperature,
        "threshold": threshold,
        "bands": bands,
        "target_fpr": config.target_fpr,
        "ai_band_fpr": config.ai_band_fpr,
        "reviewed_ai_band_fpr": loose,
        "real_band_fnr": config.real_band_fnr,
        "validation_fpr": float((negatives >= threshold).mean()) if negatives.size else 0.0,
        "validation_tpr": float((positives >= threshold).mean()) if positives.size else 0.0,
        "fitted_on": data.fitted_on,
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
    if "sources" in report:
        metrics["leave_one_source_out"] = {
            "summary": report["sources"]["summary"],
            "rows": report["sources"]["rows"],
        }
    return metrics


def out_of_source_data(held_out: list[HeldOutSource]) -> CalibrationData:
    return CalibrationData(
        logits=np.concatenate([fold.logits for fold in held_out]),
        labels=[label for fold in held_out for label in fold.labels],
        sources=[fold.source for fold in held_out for _ in fold.labels],
        fitted_on="out_of_source",
    )


def covers_labels(held_out: list[HeldOutSource], labels: list[str]) -> bool:
    """Whether out-of-source predictions can calibrate: every label is among them (sources
    holding a single label leave folds that cannot)."""
    seen = {label for fold in held_out for label in fold.labels}
    return bool(held_out) and seen >= set(labels)


def source_report(
    held_out: list[HeldOutSource], labels: list[str], ai_label: str, settings: Settings
) -> dict[str, Any]:
    """The leave-one-source-out table, each row's bands fitted without its source (with the
    reviewed kind's band where the folds tell that kind apart)."""
    reviewed_kind = any(fold.reviewed_kind is not None for fold in held_out)

    def fit(others: list[HeldOutSource]) -> dict[str, Any]:
        data = out_of_source_data(others)
        return fit_calibration(data, labels, ai_label, settings, reviewed_kind)

    return source_table(held_out, fit, labels.index(ai_label), ai_label, settings.data.real_label)


def _familiarity(
    bundle_dir: Path,
    reference: FamiliarityReference,
    val_scored: ScoredSet,
    settings: Settings,
) -> dict[str, Any]:
    """Save the reference; its threshold keeps ``abstention.quantile`` of validation images
    (in-source, never fitted on) familiar."""
    config = settings.abstention
    np.savez(bundle_dir / bundle_io.FAMILIARITY_FILE, **reference.arrays())  # type: ignore[arg-type]
    distances = reference.distances(val_scored.embeddings)
    return {
        "file": bundle_io.FAMILIARITY_FILE,
        "k": reference.k,
        "threshold": threshold_for(distances, config.quantile),
        "quantile": config.quantile,
    }


def finish_bundle(
    bundle_dir: Path,
    fields: dict[str, Any],
    val: list[Sample],
    test: list[Sample],
    settings: Settings,
    progress: ProgressFactory = no_progress,
    held_out: list[HeldOutSource] | None = None,
    familiarity: FamiliarityReference | None = None,
    float_roc_auc: float | None = None,
    reviewed_kind: ReviewedKind | None = None,
) -> Finished:
    """Calibrate, evaluate on ``test``, apply the gates and write the manifest.

    Calibration is fitted on the out-of-source predictions in ``held_out`` when there are
    any (so the bands hold on sources the model never saw), else on ``val``. ``fields`` holds
    every manifest field known before calibration; the graph files must already be in
    ``bundle_dir``. ``float_roc_auc`` (a quantised variant's float model, on the same test
    split) adds the quantisation cost to the report and its gate. ``reviewed_kind`` (a retrain
    on reviewed feedback) gets its own 'ai' band, where ``calibration.reviewed_ai_band_fpr`` is
    set.
    """
    # Metrics are measured again below: a re-calibrated or derived bundle must not carry (or be
    # gated on) figures measured on another model.
    files = {f.name: "" for f in bundle_dir.iterdir() if f.is_file()}
    fields = {**fields, "files": files, "metrics": {}}
    provisional = bundle_io.Manifest.model_validate(fields)
    detector = OnnxDetector(bundle_io.Bundle(bundle_dir, provisional))
    advance = progress("scoring validation", len(val))
    val_scored = score_samples(detector, val, with_stats=True, on_progress=advance)
    labels, ai_label = provisional.labels, provisional.ai_label
    usable = held_out if held_out and covers_labels(held_out, labels) else []
    data = out_of_source_data(usable) if usable else CalibrationData.from_scored(val_scored)
    if settings.calibration.reviewed_ai_band_fpr is None:
        reviewed_kind = None
    calibration = fit_calibration(data, labels, ai_label, settings, reviewed_kind is not None)
    reference, embeddings = drift_reference(
        val_scored,
        calibration,
        labels,
        labels.index(ai_label),
        settings.training.drift_reference_size,
    )
    np.savez_compressed(bundle_dir / bundle_io.DRIFT_FILE, embeddings=embeddings)
    fields = {
        **fields,
        "calibration": calibration,
        "drift_reference": reference,
        "probe": _probe(detector),
    }
    if familiarity is not None:
        fields["familiarity"] = _familiarity(bundle_dir, familiarity, val_scored, settings)
    (bundle_dir / bundle_io.REVIEWED_KIND_FILE).unlink(missing_ok=True)  # from an earlier finish
    if reviewed_kind is not None:
        np.savez(bundle_dir / bundle_io.REVIEWED_KIND_FILE, **reviewed_kind.arrays())  # type: ignore[arg-type]
        fields["reviewed_kind"] = {
            "file": bundle_io.REVIEWED_KIND_FILE,
            "reviewed": reviewed_kind.reviewed,
            "quantile": reviewed_kind.quantile,
        }
    bundle_io.write_manifest(bundle_dir, fields)
    detector = OnnxDetector(bundle_io.load_bundle(bundle_dir))
    conditions = len(settings.evaluation.robustness)
    advance = progress("evaluating test", len(test) * (1 + conditions))
    report = evaluate(detector, test, settings, on_progress=advance)
    if held_out:
        report["sources"] = source_report(held_out, labels, ai_label, settings)
    if float_roc_auc is not None:
        cost = float_roc_auc - report["overall"]["roc_auc"]
        report["quantization"] = {"float_roc_auc": float_roc_auc, "roc_auc_cost": cost}
    failures = quality_gate_failures(report, settings, champion_source_rows(settings))
    report_files = write_report(report, bundle_dir)
    fields.update(
        metrics=_summary_metrics(report),
        gates={"passed": not failures, "failures": failures},
        deployable=not failures,
    )
    manifest = bundle_io.write_manifest(bundle_dir, fields)
    bundle_io.load_bundle(bundle_dir)  # the finished bundle must verify
    return Finished(manifest, report, failures, report_files)


def champion_source_rows(settings: Settings) -> dict[str, dict[str, Any]] | None:
    """The leave-one-source-out rows, by source, of ``gates.champion_bundle`` (None when none
    is named or it has no such rows)."""
    folder = settings.gates.champion_bundle
    if not folder:
        return None
    metrics = bundle_io.load_bundle(folder).manifest.metrics
    rows = metrics.get("leave_one_source_out", {}).get("rows", [])
    return {row["source"]: row for row in rows} or None


# Legitimate differences between CPUs measured 0.997 or more on the probe; kernels that overflow
# gave 0.41 (model/bundle.py, Probe).
QUANTISED_PROBE_MIN_COSINE = 0.99


def _probe(detector: OnnxDetector) -> dict[str, object]:
    """The probe logits (and embedding) on the detector's runtime and, where that is not ONNX
    Runtime, on ONNX Runtime too: the fallback where the runtime is not installed must be
    checked as well. A graph that quantises its activations is checked by the embedding's
    direction (``Probe.min_cosine``), which other CPUs' kernels keep."""
    probe = probe_input(detector.manifest.preprocessing.input_size)
    graph = detector.bundle.graph()
    output = detector.run(probe)
    recorded: dict[str, object] = {"logits": output.logits.tolist()}
    quantised = quantises_activations(graph)
    if quantised:
        recorded["embedding"] = output.embedding.tolist()
        recorded["min_cosine"] = QUANTISED_PROBE_MIN_COSINE
    if detector.runtime != "onnxruntime":
        session = make_session(graph)
        logits, embedding = session.run(["logits", "embedding"], {detector.input_name: probe})
        recorded["fallback_logits"] = np.asarray(logits, np.float32).tolist()
        if quantised:
            recorded["fallback_embedding"] = np.asarray(embedding, np.float32).tolist()
    return recorded
