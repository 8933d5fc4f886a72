"""Shortcut audit: how well file metadata alone separates the labels.

If format, JPEG quality, size or EXIF presence predict the label, a network can learn the
file rather than the picture and will fail on data saved differently. The audit trains a
small random forest on metadata only, with cross-validation, and reports ROC-AUC.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ai_photo_detector.data.scan import ScannedImage

FEATURES = ("jpeg_quality", "width", "height", "bytes", "has_exif", "format")


def _matrix(images: list[ScannedImage], features: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    formats = sorted({img.format for img in images}) if "format" in features else []
    numeric = [name for name in features if name != "format"]
    rows = []
    for img in images:
        values = {
            "jpeg_quality": float(img.jpeg_quality if img.jpeg_quality is not None else -1),
            "width": float(img.width),
            "height": float(img.height),
            "bytes": float(img.bytes),
            "has_exif": float(img.has_exif),
        }
        rows.append([values[name] for name in numeric] + [float(img.format == f) for f in formats])
    names = numeric + [f"format={f}" for f in formats]
    return np.asarray(rows, dtype=np.float64), names


def single_feature_auc(values: np.ndarray, y: np.ndarray) -> float:
    if np.unique(values).size < 2:
        return 0.5
    auc = float(roc_auc_score(y, values))
    return max(auc, 1.0 - auc)


def audit(
    images: list[ScannedImage],
    ai_label: str,
    warn_auc: float,
    alarm_auc: float,
    seed: int = 0,
    features: tuple[str, ...] = FEATURES,
) -> dict[str, Any]:
    """Metadata-only separability of ``ai_label`` from the rest."""
    usable = [img for img in images if img.ok]
    y = np.asarray([img.sample.label == ai_label for img in usable], dtype=np.int64)
    result: dict[str, Any] = {"count": len(usable), "features": list(features)}
    if len(usable) < 10 or y.min() == y.max() or min(y.sum(), (1 - y).sum()) < 3:
        result.update(status="skipped", reason="needs at least 3 images of AI and of other labels")
        return result
    x, names = _matrix(usable, features)
    folds = int(min(5, y.sum(), (1 - y).sum()))
    model = RandomForestClassifier(n_estimators=100, max_depth=6, random_state=seed, n_jobs=1)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, scores))
    per_feature = {name: single_feature_auc(x[:, i], y) for i, name in enumerate(names)}
    strongest = max(per_feature, key=lambda k: per_feature[k])
    status = "alarm" if auc >= alarm_auc else "warn" if auc >= warn_auc else "ok"
    result.update(
        status=status,
        metadata_roc_auc=auc,
        per_feature_auc=per_feature,
        strongest_feature=strongest,
        label_values=_label_values(usable, strongest if strongest in features else "format"),
    )
    return result


def _label_values(images: list[ScannedImage], feature: str) -> dict[str, dict[str, int]]:
    """How the strongest feature's values spread over labels (top values per label)."""
    table: dict[str, dict[str, int]] = {}
    for img in images:
        value = str(getattr(img, feature))
        counts = table.setdefault(img.sample.label, {})
        counts[value] = counts.get(value, 0) + 1
    return {
        label: dict(sorted(c.items(), key=lambda kv: -kv[1])[:5])
        for label, c in sorted(table.items())
    }
