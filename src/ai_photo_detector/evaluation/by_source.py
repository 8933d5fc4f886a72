"""Detection measured by source: the leave-one-source-out table that leads every report.

Each held-out source was scored by a model fitted without it. Its row's band figures use a
calibration fitted on the *other* held-out sources' predictions only (nested), so the 'ai' band
rate on real photos is what an unseen source would meet, not a number fitted to itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.evaluation.metrics import safe_auc, tpr_at_fpr
from ai_photo_detector.model.inference import softmax


@dataclass
class HeldOutSource:
    """A source's images scored by a model that never saw the source."""

    source: str
    labels: list[str]  # true label per image
    logits: NDArray[np.float32]
    unfamiliar: NDArray[np.bool_]  # the fold's familiarity check, per image
    paths: list[str] = field(default_factory=list)
    # Distance to the fold's training embeddings over its familiarity threshold (above 1:
    # unfamiliar), kept so that rules on familiarity can be re-fitted without refitting a fold.
    distance_ratio: NDArray[np.float32] | None = None
    # Scored in parts by detectors that saw the rest of the source (reviewed feedback, which
    # the final detector learns from): in-source figures, not out-of-source ones.
    cross_fitted: bool = False
    # Of the kind the reviewed feedback taught, by the fold's own classifier, per image: these
    # meet the 'ai' band at bands.ai_from_reviewed (None: no reviewed kind in the fold).
    reviewed_kind: NDArray[np.bool_] | None = None

    def reordered(self, order: NDArray[np.intp]) -> HeldOutSource:
        return HeldOutSource(
            source=self.source,
            labels=[self.labels[i] for i in order],
            logits=self.logits[order],
            unfamiliar=self.unfamiliar[order],
            paths=[self.paths[i] for i in order] if self.paths else [],
            distance_ratio=self.distance_ratio[order] if self.distance_ratio is not None else None,
            cross_fitted=self.cross_fitted,
            reviewed_kind=self.reviewed_kind[order] if self.reviewed_kind is not None else None,
        )


def _rates(
    fold: HeldOutSource, calibration: dict[str, Any], ai_index: int, ai_label: str, real: str
) -> dict[str, Any]:
    p_ai = softmax(fold.logits, calibration["temperature"])[:, ai_index]
    is_ai = np.asarray([label == ai_label for label in fold.labels])
    is_real = np.asarray([label == real for label in fold.labels])
    bands = calibration["bands"]
    ai_from = np.full(len(p_ai), bands["ai_from"])
    reviewed_from = bands.get("ai_from_reviewed")
    if fold.reviewed_kind is not None and reviewed_from is not None:
        ai_from[fold.reviewed_kind] = reviewed_from
    in_ai = (p_ai >= ai_from) & ~fold.unfamiliar
    in_real = (p_ai < bands["real_below"]) & ~fold.unfamiliar
    uncertain = ~in_ai & ~in_real

    def share(mask: NDArray[np.bool_], within: NDArray[np.bool_]) -> float:
        return float(mask[within].mean()) if within.any() else float("nan")

    y = is_ai.astype(np.int64)
    kind = {} if fold.reviewed_kind is None else {"reviewed_kind": int(fold.reviewed_kind.sum())}
    return {
        **kind,
        "source": fold.source,
        "fit": "cross_fitted" if fold.cross_fitted else "held_out",
        "count": len(fold.labels),
        "real": int(is_real.sum()),
        "ai": int(is_ai.sum()),
        "roc_auc": safe_auc(y, p_ai),
        "tpr_at_1pct_fpr": tpr_at_fpr(y, p_ai, 0.01),
        "ai_band_fpr": share(in_ai, is_real),
        "ai_band_false_positives": int((in_ai & is_real).sum()),
        "ai_band_tpr": share(in_ai, is_ai),
        "real_band_fnr": share(in_real, is_ai),
        "uncertain_share": float(uncertain.mean()) if len(uncertain) else float("nan"),
        "unfamiliar_share": float(fold.unfamiliar.mean()) if len(fold.unfamiliar) else float("nan"),
    }


def source_table(
    folds: list[HeldOutSource],
    fit: Any,
    ai_index: int,
    ai_label: str,
    real_label: str,
) -> dict[str, Any]:
    """Per held-out source: ROC-AUC, TPR at 1 % FPR, and the band rates under a calibration
    fitted (by ``fit(other_folds)``) without that source; plus the pooled summary."""
    rows = []
    for fold in folds:
        others = [f for f in folds if f is not fold]
        if not others:
            continue
        rows.append(_rates(fold, fit(others), ai_index, ai_label, real_label))
    aucs = [r["roc_auc"] for r in rows if not math.isnan(r["roc_auc"])]
    reals = sum(r["real"] for r in rows)
    images = sum(r["count"] for r in rows)
    summary = {
        "sources": len(rows),
        "mean_roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "min_roc_auc": float(np.min(aucs)) if aucs else float("nan"),
        "pooled_ai_band_fpr": sum(r["ai_band_false_positives"] for r in rows) / reals
        if reals
        else float("nan"),
        "real": reals,
        "ai_band_false_positives": sum(r["ai_band_false_positives"] for r in rows),
        "worst_ai_band_fpr": max(
            (r["ai_band_fpr"] for r in rows if not math.isnan(r["ai_band_fpr"])),
            default=float("nan"),
        ),
        "uncertain_share": sum(r["uncertain_share"] * r["count"] for r in rows) / images
        if images
        else float("nan"),
    }
    return {"rows": rows, "summary": summary}
