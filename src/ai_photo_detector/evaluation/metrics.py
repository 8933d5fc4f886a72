"""Detection metrics from calibrated scores: the numbers in reports and the bundle."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


def expected_calibration_error(
    probs: NDArray[np.floating], targets: NDArray[np.integer], bins: int = 15
) -> float:
    """Top-label ECE with equal-width confidence bins."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in pairwise(edges):
        mask = (confidence > low) & (confidence <= high)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def reliability_curve(
    probs: NDArray[np.floating], targets: NDArray[np.integer], bins: int = 15
) -> dict[str, list[float]]:
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    mids: list[float] = []
    accs: list[float] = []
    confs: list[float] = []
    counts: list[float] = []
    for low, high in pairwise(edges):
        mask = (confidence > low) & (confidence <= high)
        if mask.any():
            mids.append(float((low + high) / 2))
            accs.append(float(correct[mask].mean()))
            confs.append(float(confidence[mask].mean()))
            counts.append(float(mask.sum()))
    return {"bin_mid": mids, "accuracy": accs, "confidence": confs, "count": counts}


def tpr_at_fpr(y_true: NDArray[np.integer], scores: NDArray[np.floating], fpr: float) -> float:
    if len(np.unique(y_true)) < 2:
        return float("nan")
    fprs, tprs, _ = roc_curve(y_true, scores)
    return float(np.max(tprs[fprs <= fpr])) if np.any(fprs <= fpr) else 0.0


def safe_auc(y_true: NDArray[np.integer], scores: NDArray[np.floating]) -> float:
    return float(roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else float("nan")


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """The standard error of a ROC-AUC measured on ``positives`` and ``negatives`` (Hanley and
    McNeil, 1982): how far another sample of the same sizes could put it by chance."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def detection_metrics(
    *,
    targets: NDArray[np.integer],
    predicted: NDArray[np.integer],
    probs: NDArray[np.floating],
    raw_probs: NDArray[np.floating],
    ai_index: int,
    labels: list[str],
    ece_bins: int,
) -> dict[str, Any]:
    """AI-vs-rest detection metrics plus the multi-class confusion matrix."""
    y_true = (targets == ai_index).astype(np.int64)
    y_pred = (predicted == ai_index).astype(np.int64)
    scores = probs[:, ai_index]
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="binary", zero_division=0
    )
    negatives = y_true == 0
    return {
        "count": len(targets),
        "accuracy": float((predicted == targets).mean()),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "fpr": float(y_pred[negatives].mean()) if negatives.any() else float("nan"),
        "roc_auc": safe_auc(y_true, scores),
        "average_precision": float(average_precision_score(y_true, scores))
        if y_true.any()
        else float("nan"),
        "tpr_at_1pct_fpr": tpr_at_fpr(y_true, scores, 0.01),
        "ece_uncalibrated": expected_calibration_error(raw_probs, targets, ece_bins),
        "ece": expected_calibration_error(probs, targets, ece_bins),
        "confusion_matrix": {
            "labels": labels,
            "matrix": confusion_matrix(
                targets, predicted, labels=list(range(len(labels)))
            ).tolist(),
        },
    }
