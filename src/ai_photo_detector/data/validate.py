"""The data validation report: what a dataset holds and what could mislead a detector."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ai_photo_detector.data.discovery import Sample, counts
from ai_photo_detector.data.duplicates import exact_duplicate_groups, near_duplicate_pairs
from ai_photo_detector.data.scan import ScannedImage
from ai_photo_detector.data.shortcut import FEATURES, audit, single_feature_auc
from ai_photo_detector.settings import DataSettings

# On the processed views every saved-how attribute is fixed by the pipeline; the compressed
# size at that fixed size and quality is a measure of the pixels themselves (how much detail
# they hold, like sharpness), so it is reported apart from the metadata audit.
PROCESSED_FEATURES = tuple(f for f in FEATURES if f != "bytes")


def _rel(sample: Sample) -> str:
    return str(sample.path)


def build_report(images: list[ScannedImage], settings: DataSettings) -> dict[str, Any]:
    samples = [img.sample for img in images]
    usable = [img for img in images if img.ok]
    problems = [
        {"path": _rel(img.sample), "code": img.error_code, "message": img.error}
        for img in images
        if not img.ok
    ]
    tiny = [
        {"path": _rel(img.sample), "width": img.width, "height": img.height}
        for img in usable
        if min(img.width, img.height) < settings.tiny_side
    ]
    exact = [
        {
            "paths": [_rel(images[i].sample) for i in group],
            "labels": sorted({images[i].sample.label for i in group}),
        }
        for group in exact_duplicate_groups(images)
    ]
    near = []
    for a, b, distance in near_duplicate_pairs(images, settings.near_duplicate_distance):
        if images[a].sha256 == images[b].sha256:
            continue  # already listed as an exact duplicate
        near.append(
            {
                "a": _rel(images[a].sample),
                "b": _rel(images[b].sample),
                "distance": distance,
                "cross_label": images[a].sample.label != images[b].sample.label,
            }
        )
    label_counts = Counter(img.sample.label for img in usable)
    ratio = max(label_counts.values()) / max(1, min(label_counts.values())) if label_counts else 0
    shortcut = _audits(images, settings)
    views = [img.view for img in usable if img.view is not None]
    processed = _audits(views, settings, PROCESSED_FEATURES) if views else {}
    findings = _findings(problems, tiny, exact, near, ratio, shortcut, settings, label_counts)
    findings += _processed_findings(processed, settings)
    return {
        "total_files": len(images),
        "usable_images": len(usable),
        "labels": dict(sorted(label_counts.items())),
        "counts": counts(samples),
        "formats": dict(Counter(img.format for img in usable)),
        "unreadable": problems,
        "tiny_images": tiny,
        "exact_duplicates": exact,
        "near_duplicates": near,
        "class_balance": {"ratio": ratio, "ok": ratio <= settings.imbalance_ratio},
        "shortcut_audit": shortcut,
        "processed_view_audit": processed,
        "processed_view_size_auc": _size_auc(views, settings.ai_label),
        "findings": findings,
    }


def _audits(
    images: list[ScannedImage], settings: DataSettings, features: tuple[str, ...] = FEATURES
) -> dict[str, dict[str, Any]]:
    """The metadata-only audit over all images and per source."""
    groups = {"all": images}
    for source in sorted({img.sample.source for img in images}):
        groups[source] = [img for img in images if img.sample.source == source]
    return {
        scope: audit(
            members,
            settings.ai_label,
            settings.shortcut_warn_auc,
            settings.shortcut_alarm_auc,
            features=features,
        )
        for scope, members in groups.items()
    }


def _size_auc(views: list[ScannedImage], ai_label: str) -> dict[str, float]:
    """How well the processed view's compressed size alone separates the labels, per source."""
    groups = {"all": views}
    for source in sorted({img.sample.source for img in views}):
        groups[source] = [img for img in views if img.sample.source == source]
    result = {}
    for scope, members in groups.items():
        y = np.asarray([img.sample.label == ai_label for img in members], dtype=np.int64)
        if 0 < y.sum() < len(y):
            result[scope] = single_feature_auc(np.asarray([img.bytes for img in members]), y)
    return result


def _processed_findings(
    processed: dict[str, dict[str, Any]], settings: DataSettings
) -> list[dict[str, str]]:
    """After the training pipeline's resizing and re-encoding, metadata must say nothing."""
    if not processed:
        return []
    leaking = {
        scope: result["metadata_roc_auc"]
        for scope, result in processed.items()
        if result.get("metadata_roc_auc", 0.0) > settings.processed_max_auc
    }
    if leaking:
        return [
            {
                "level": "alarm",
                "message": "SHORTCUT survives the training pipeline: on the processed model "
                f"views metadata still separates the labels ({leaking}, limit "
                f"{settings.processed_max_auc})",
            }
        ]
    worst = max(r.get("metadata_roc_auc", 0.5) for r in processed.values())
    return [
        {
            "level": "info",
            "message": "processed model views carry no metadata shortcut: metadata-only "
            f"ROC-AUC at most {worst:.3f} per source (limit {settings.processed_max_auc})",
        }
    ]


def _findings(
    problems: list[dict[str, Any]],
    tiny: list[dict[str, Any]],
    exact: list[dict[str, Any]],
    near: list[dict[str, Any]],
    ratio: float,
    shortcut: dict[str, dict[str, Any]],
    settings: DataSettings,
    label_counts: Counter[str],
) -> list[dict[str, str]]:
    """Readable one-line findings, worst first."""
    found: list[dict[str, str]] = []
    for scope, result in shortcut.items():
        if result.get("status") in ("alarm", "warn"):
            feature = result["strongest_feature"]
            found.append(
                {
                    "level": "alarm" if result["status"] == "alarm" else "warn",
                    "message": (
                        f"SHORTCUT in {scope}: file metadata alone separates '{settings.ai_label}' "
                        f"from the rest with ROC-AUC {result['metadata_roc_auc']:.3f}; strongest "
                        f"feature '{feature}' (AUC {result['per_feature_auc'][feature]:.3f}), "
                        f"values by label {result['label_values']}. A model can learn the file "
                        f"instead of the picture: keep re-encoding augmentations on."
                    ),
                }
            )
    if settings.ai_label not in label_counts:
        found.append(
            {"level": "alarm", "message": f"no images carry the AI label '{settings.ai_label}'"}
        )
    cross = [n for n in near if n["cross_label"]] + [e for e in exact if len(e["labels"]) > 1]
    if cross:
        found.append(
            {"level": "warn", "message": f"{len(cross)} duplicate sets carry different labels"}
        )
    if problems:
        found.append(
            {"level": "warn", "message": f"{len(problems)} files are unreadable and skipped"}
        )
    if exact or near:
        found.append(
            {
                "level": "info",
                "message": f"{len(exact)} exact duplicate groups and {len(near)} near-duplicate "
                "pairs; splits keep each group on one side",
            }
        )
    if tiny:
        found.append(
            {"level": "info", "message": f"{len(tiny)} images are under {settings.tiny_side} px"}
        )
    if ratio > settings.imbalance_ratio:
        found.append(
            {
                "level": "warn",
                "message": f"class imbalance: largest/smallest label ratio {ratio:.2f}",
            }
        )
    return found


def summary_text(report: dict[str, Any]) -> str:
    lines = [
        f"{report['usable_images']} usable images of {report['total_files']} files",
        "labels: " + ", ".join(f"{k}={v}" for k, v in report["labels"].items()),
    ]
    for source, by_label in report["counts"].items():
        lines.append(f"  {source}: " + ", ".join(f"{k}={v}" for k, v in by_label.items()))
    audits = (("shortcut audit", "shortcut_audit"), ("processed views", "processed_view_audit"))
    for title, key in audits:
        for scope, result in report.get(key, {}).items():
            if "metadata_roc_auc" in result:
                lines.append(
                    f"{title} [{scope}]: {result['status'].upper()} metadata-only ROC-AUC "
                    f"{result['metadata_roc_auc']:.3f} (strongest: {result['strongest_feature']})"
                )
    lines.append(
        f"duplicates: {len(report['exact_duplicates'])} exact groups, "
        f"{len(report['near_duplicates'])} near pairs; unreadable: {len(report['unreadable'])}; "
        f"tiny: {len(report['tiny_images'])}; balance ratio {report['class_balance']['ratio']:.2f}"
    )
    for finding in report["findings"]:
        lines.append(f"[{finding['level'].upper()}] {finding['message']}")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "data_report.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    text_path = out_dir / "data_report.txt"
    text_path.write_text(summary_text(report), encoding="utf-8")
    return json_path, text_path
