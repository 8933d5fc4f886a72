"""Honest evaluation of a bundle: metrics, per-source breakdown, robustness, report files."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.data.discovery import DatasetError, Sample
from ai_photo_detector.evaluation.metrics import (
    auc_standard_error,
    detection_metrics,
    reliability_curve,
    safe_auc,
)
from ai_photo_detector.evaluation.scoring import ScoredSet, score_samples
from ai_photo_detector.model.inference import (
    BatchOutput,
    OnnxDetector,
    calibrated_probabilities,
    softmax,
    verdicts,
)
from ai_photo_detector.settings import Settings


def metrics_of(scored: ScoredSet, detector: OnnxDetector, ece_bins: int) -> dict[str, Any]:
    manifest = detector.manifest
    labels = manifest.labels
    targets = scored.targets(labels)
    probs = calibrated_probabilities(scored.logits, manifest)
    predicted = np.asarray([labels.index(v.label) for v in verdicts(scored.logits, manifest)])
    return detection_metrics(
        targets=targets,
        predicted=predicted,
        probs=probs,
        raw_probs=softmax(scored.logits),
        ai_index=manifest.ai_index,
        labels=labels,
        ece_bins=ece_bins,
    )


def _subset(scored: ScoredSet, mask: NDArray[np.bool_]) -> ScoredSet:
    return ScoredSet(
        samples=[s for s, keep in zip(scored.samples, mask, strict=True) if keep],
        logits=scored.logits[mask],
        embeddings=scored.embeddings[mask],
        stats={k: v[mask] for k, v in scored.stats.items() if len(v) == len(mask)},
    )


def _ai_auc(scored: ScoredSet, detector: OnnxDetector) -> float:
    manifest = detector.manifest
    y_true = (scored.targets(manifest.labels) == manifest.ai_index).astype(np.int64)
    return safe_auc(y_true, calibrated_probabilities(scored.logits, manifest)[:, manifest.ai_index])


def evaluate(
    detector: OnnxDetector,
    samples: Sequence[Sample],
    settings: Settings,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The full evaluation report of one bundle on labelled samples."""
    unknown = {s.label for s in samples} - set(detector.manifest.labels)
    if unknown:
        raise DatasetError(
            f"labels {sorted(unknown)} are not in the model's {detector.manifest.labels}"
        )
    batch = settings.evaluation.batch_size
    scored = score_samples(detector, samples, batch_size=batch, on_progress=on_progress)
    bins = settings.calibration.ece_bins
    overall = metrics_of(scored, detector, bins)
    sources = np.asarray([s.source for s in scored.samples])
    per_source = {
        name: metrics_of(_subset(scored, sources == name), detector, bins)
        for name in sorted(set(sources.tolist()))
    }
    base_auc = overall["roc_auc"]
    robustness = []
    for condition in settings.evaluation.robustness:
        shifted = score_samples(
            detector, samples, condition=condition, batch_size=batch, on_progress=on_progress
        )
        auc = _ai_auc(shifted, detector)
        shifted_metrics = metrics_of(shifted, detector, bins)
        robustness.append(
            {
                "condition": condition,
                "roc_auc": auc,
                "auc_drop": base_auc - auc,
                "accuracy": shifted_metrics["accuracy"],
                "fpr": shifted_metrics["fpr"],
                "recall": shifted_metrics["recall"],
            }
        )
    manifest = detector.manifest
    probs = calibrated_probabilities(scored.logits, manifest)
    targets = scored.targets(manifest.labels)
    seen = set(manifest.dataset.sources)
    for name, row in per_source.items():
        row["seen_in_training"] = name in seen
    recorded = manifest.metrics.get("leave_one_source_out")
    return {
        # The bundle's own leave-one-source-out table, measured when it was trained; a training
        # run replaces it with the one it has just measured.
        **({"sources": recorded} if recorded else {}),
        "band_table": _band_table(scored, targets, detector),
        "model": {"name": manifest.name, "version": manifest.version},
        "threshold": manifest.calibration.threshold,
        "bands": manifest.calibration.bands.model_dump(),
        "temperature": manifest.calibration.temperature,
        "overall": overall,
        "per_source": per_source,
        "robustness": robustness,
        "errors": {str(k): v for k, v in scored.errors.items()},
        "curves": {
            "roc": _roc_points(targets == manifest.ai_index, probs[:, manifest.ai_index]),
            "reliability_uncalibrated": reliability_curve(softmax(scored.logits), targets, bins),
            "reliability": reliability_curve(probs, targets, bins),
        },
    }


def _band_table(
    scored: ScoredSet, targets: NDArray[np.integer], detector: OnnxDetector
) -> list[dict[str, Any]]:
    """How test images spread over the bands (an unfamiliar image is 'uncertain'), and how
    many of each band are really AI."""
    manifest = detector.manifest
    found = detector.verdicts(BatchOutput(scored.logits, scored.embeddings))
    bands = np.asarray([v.band for v in found])
    is_ai = targets == manifest.ai_index
    rows = []
    for band in ("real", "uncertain", "ai"):
        mask = bands == band
        rows.append(
            {
                "band": band,
                "share": float(mask.mean()) if len(mask) else 0.0,
                "count": int(mask.sum()),
                "ai_share_in_band": float(is_ai[mask].mean()) if mask.any() else float("nan"),
            }
        )
    return rows


def _roc_points(y_true: NDArray[np.bool_], scores: NDArray[np.floating]) -> dict[str, list[float]]:
    from sklearn.metrics import roc_curve

    if len(np.unique(y_true)) < 2:
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(y_true.astype(int), scores)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def quality_gate_failures(
    report: dict[str, Any],
    settings: Settings,
    champion_rows: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """Why the model is not deployable ([] when it is). ``champion_rows``: the leave-one-source-
    out rows of the model it would replace, by source; a held-out source's share gate then
    refuses only a model measurably worse than that one on the same photos."""
    gates = settings.gates
    overall = report["overall"]
    failures = []
    auc = overall["roc_auc"]
    if not (isinstance(auc, float) and auc >= gates.min_roc_auc):
        failures.append(f"test ROC-AUC {auc:.4f} is below the minimum {gates.min_roc_auc}")
    if not overall["ece"] <= gates.max_ece:
        failures.append(f"calibrated ECE {overall['ece']:.4f} is above the maximum {gates.max_ece}")
    for row in report["robustness"]:
        if not row["auc_drop"] <= gates.max_robust_auc_drop:
            failures.append(
                f"AUC drops by {row['auc_drop']:.4f} under {row['condition']}, more than "
                f"{gates.max_robust_auc_drop}"
            )
    quantization = report.get("quantization")
    if quantization and not quantization["roc_auc_cost"] <= gates.max_quantization_auc_cost:
        failures.append(
            f"quantisation costs {quantization['roc_auc_cost']:.4f} of test ROC-AUC against "
            f"the float model, more than {gates.max_quantization_auc_cost}"
        )
    summary = report.get("sources", {}).get("summary")
    if summary and not math.isnan(summary.get("mean_roc_auc", float("nan"))):  # else unmeasured
        mean_auc = summary["mean_roc_auc"]
        if not mean_auc >= gates.min_source_roc_auc:
            below = (
                f"mean leave-one-source-out ROC-AUC {mean_auc:.4f} is below the minimum "
                f"{gates.min_source_roc_auc}"
            )
            rows = report["sources"].get("rows", [])
            below = _mean_worse_than_champion(rows, champion_rows, gates.significance, below)
            if below:
                failures.append(below)
        limit = gates.max_source_ai_band_fpr
        refused = _share_refused(summary, summary["pooled_ai_band_fpr"], limit, gates.significance)
        if refused:
            failures.append(f"held-out sources' real photos in the 'ai' band: {refused}")
        for row in report["sources"].get("rows", []):
            if row["real"] < settings.calibration.min_source_reals:
                continue
            limit = gates.max_each_source_ai_band_fpr
            refused = _share_refused(row, row["ai_band_fpr"], limit, gates.significance)
            champion = (champion_rows or {}).get(row["source"])
            if refused and champion is not None:
                refused = _worse_than_champion(row, champion, gates.significance, refused)
            if refused:
                failures.append(
                    f"held-out {row['source']}'s real photos in the 'ai' band: {refused}"
                )
    return failures


def _measured(row: dict[str, Any]) -> bool:
    """Whether a source row has a ROC-AUC and the counts of both labels it was measured on."""
    auc = row.get("roc_auc")
    has_counts = bool(row.get("ai")) and bool(row.get("real"))
    return isinstance(auc, float) and not math.isnan(auc) and has_counts


def _mean_worse_than_champion(
    rows: list[dict[str, Any]],
    champion_rows: dict[str, dict[str, Any]] | None,
    significance: float,
    refused: str,
) -> str:
    """``refused`` with the comparison beside it when the model's mean ROC-AUC over the
    held-out sources the champion was also measured on is below the champion's by more than
    their sizes can explain (one-sided, each ROC-AUC's standard error by Hanley and McNeil),
    or "" when it is not: those sources were as hard for the model in service. Without a
    champion, or none of its sources in common, ``refused`` as it is."""
    pairs = [
        (row, champion_rows[row["source"]])
        for row in rows
        if champion_rows
        and row["source"] in champion_rows
        and _measured(row)
        and _measured(champion_rows[row["source"]])
    ]
    if not pairs:
        return refused

    def variance(row: dict[str, Any]) -> float:
        return auc_standard_error(row["roc_auc"], int(row["ai"]), int(row["real"])) ** 2

    ours = float(np.mean([row["roc_auc"] for row, _ in pairs]))
    theirs = float(np.mean([champion["roc_auc"] for _, champion in pairs]))
    error = math.sqrt(sum(variance(row) + variance(champion) for row, champion in pairs))
    error /= len(pairs)
    bound = NormalDist().inv_cdf(1 - significance) * error
    if ours - theirs >= -bound:
        return ""
    return (
        f"{refused}; on the {len(pairs)} sources the champion was measured on, "
        f"{ours:.4f} against its {theirs:.4f}, more than the {bound:.4f} their sizes explain"
    )


def _worse_than_champion(
    row: dict[str, Any], champion: dict[str, Any], significance: float, refused: str
) -> str:
    """``refused`` with the champion's count beside it when the model puts measurably more of
    the source's real photos in the 'ai' band than the champion did (one-sided Fisher exact
    test), or "" when it does not: the source was as hard for the model in service."""
    theirs, their_reals = champion.get("ai_band_false_positives"), champion.get("real")
    if theirs is None or not their_reals:
        return refused
    from scipy.stats import fisher_exact

    ours, reals = int(row["ai_band_false_positives"]), int(row["real"])
    table = [[ours, reals - ours], [int(theirs), int(their_reals) - int(theirs)]]
    p_value = float(fisher_exact(table, alternative="greater").pvalue)
    if p_value >= significance:
        return ""
    return (
        f"{refused}; the champion put {theirs} of {their_reals} there (one-sided Fisher exact "
        f"p = {p_value:.3g} < {significance})"
    )


def _share_refused(counts: dict[str, Any], share: float, limit: float, significance: float) -> str:
    """Why a share of real photos in the 'ai' band fails its limit, or "" when it does not.

    It fails only when above the limit by more than its number of photos can explain: the
    one-sided binomial test of the count against the limit rejects at ``significance``. A
    report without counts (made before they were kept) is held to the share alone.
    """
    if share <= limit:
        return ""
    reals = counts.get("real")
    false_positives = counts.get("ai_band_false_positives")
    if reals is None or false_positives is None:
        return f"{share:.1%}, more than {limit:.1%}"
    from scipy.stats import binomtest

    p_value = binomtest(int(false_positives), int(reals), limit, alternative="greater").pvalue
    if p_value >= significance:
        return ""
    return (
        f"{false_positives} of {reals} ({share:.1%}), more than {limit:.1%} beyond what "
        f"{reals} photos can explain (one-sided binomial p = {p_value:.3g} < {significance})"
    )


# --- report files ------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def sources_markdown(sources: dict[str, Any]) -> list[str]:
    """The leave-one-source-out table: each source scored by a model fitted without it."""
    summary = sources["summary"]
    lines = [
        "## Sources never seen in training (leave one source out)",
        "",
        "Each row: a model fitted without that source, scored on all its images; the band "
        "columns use bands fitted without it too.",
        "",
        "| held-out source | images (real/ai) | ROC-AUC | TPR @ 1 % FPR | real in 'ai' band | "
        "AI in 'ai' band | AI in 'real' band | uncertain | unfamiliar |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sources["rows"]:
        lines.append(
            f"| {row['source']} | {row['count']} ({row['real']}/{row['ai']}) | "
            f"{_fmt(row['roc_auc'])} | {_fmt(row['tpr_at_1pct_fpr'])} | "
            f"{_fmt(row['ai_band_fpr'])} ({row['ai_band_false_positives']}) | "
            f"{_fmt(row['ai_band_tpr'])} | {_fmt(row['real_band_fnr'])} | "
            f"{_fmt(row['uncertain_share'])} | {_fmt(row['unfamiliar_share'])} |"
        )
    lines += [
        "",
        f"Mean ROC-AUC {_fmt(summary['mean_roc_auc'])} (lowest {_fmt(summary['min_roc_auc'])}); "
        f"real photos in the 'ai' band: {_fmt(summary['pooled_ai_band_fpr'])} pooled, "
        f"{_fmt(summary['worst_ai_band_fpr'])} on the worst source; "
        f"uncertain: {_fmt(summary['uncertain_share'])}.",
        "",
    ]
    return lines


def _reviewed_band(bands: dict[str, Any]) -> str:
    start = bands.get("ai_from_reviewed")
    return "" if start is None else f" (photos of the reviewed kind: from {start:.4f})"


def markdown_report(report: dict[str, Any]) -> str:
    overall = report["overall"]
    lines = [
        f"# Evaluation of {report['model']['name']} {report['model']['version']}",
        "",
    ]
    if "sources" in report:
        lines += sources_markdown(report["sources"])
        lines += ["## Held-out images of the training sources (random split)", ""]
    lines += [
        f"Threshold {report['threshold']:.4f} (AI when the calibrated AI probability reaches it); "
        f"bands: real below {report['bands']['real_below']:.4f}, AI from "
        f"{report['bands']['ai_from']:.4f}{_reviewed_band(report['bands'])}; temperature "
        f"{report['temperature']:.3f}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in (
        "count",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "fpr",
        "roc_auc",
        "average_precision",
        "tpr_at_1pct_fpr",
        "ece_uncalibrated",
        "ece",
    ):
        lines.append(f"| {key} | {_fmt(overall[key])} |")
    quantization = report.get("quantization")
    if quantization:
        lines += [
            "",
            f"INT8 variant: test ROC-AUC {_fmt(overall['roc_auc'])} against "
            f"{_fmt(quantization['float_roc_auc'])} for its float model on the same images "
            f"(cost {_fmt(quantization['roc_auc_cost'])}).",
        ]
    matrix = overall["confusion_matrix"]
    lines += ["", "Confusion matrix (rows: true label, columns: predicted):", ""]
    lines.append("| | " + " | ".join(matrix["labels"]) + " |")
    lines.append("|---" * (len(matrix["labels"]) + 1) + "|")
    for label, row in zip(matrix["labels"], matrix["matrix"], strict=True):
        lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Bands", "", "| band | share of images | count | share really AI |"]
    lines.append("|---|---|---|---|")
    for row in report["band_table"]:
        lines.append(
            f"| {row['band']} | {_fmt(row['share'])} | {row['count']} | "
            f"{_fmt(row['ai_share_in_band'])} |"
        )
    lines += [
        "",
        "## Per source",
        "",
        "| source | seen in training | n | accuracy | ROC-AUC | FPR | recall | ECE |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for source, m in report["per_source"].items():
        seen = "yes" if m.get("seen_in_training", True) else "**no**"
        lines.append(
            f"| {source} | {seen} | {m['count']} | {_fmt(m['accuracy'])} | "
            f"{_fmt(m['roc_auc'])} | {_fmt(m['fpr'])} | {_fmt(m['recall'])} | {_fmt(m['ece'])} |"
        )
    lines += [
        "",
        "## Robustness",
        "",
        "| condition | ROC-AUC | AUC drop | accuracy | FPR | recall |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for row in report["robustness"]:
        lines.append(
            f"| {row['condition']} | {_fmt(row['roc_auc'])} | {_fmt(row['auc_drop'])} | "
            f"{_fmt(row['accuracy'])} | {_fmt(row['fpr'])} | {_fmt(row['recall'])} |"
        )
    if report["errors"]:
        lines += ["", f"{len(report['errors'])} files could not be decoded and were skipped."]
    return "\n".join(lines) + "\n"


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    roc = report["curves"]["roc"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(roc["fpr"], roc["tpr"], label=f"AUC {_fmt(report['overall']['roc_auc'])}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false-positive rate (real called AI)", ylabel="true-positive rate", title="ROC")
    ax.legend(loc="lower right")
    paths.append(out_dir / "roc.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for key, name in (("reliability_uncalibrated", "before"), ("reliability", "after")):
        curve = report["curves"][key]
        ax.plot(curve["confidence"], curve["accuracy"], marker="o", label=f"{name} calibration")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability diagram")
    ax.legend(loc="upper left")
    paths.append(out_dir / "reliability.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "evaluation.json"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    md_path = out_dir / "evaluation.md"
    md_path.write_text(markdown_report(report), encoding="utf-8")
    return [json_path, md_path, *write_plots(report, out_dir)]
