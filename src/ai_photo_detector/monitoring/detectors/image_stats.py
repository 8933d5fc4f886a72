"""Image statistics (brightness, contrast, saturation, sharpness, JPEG quality): one KS test
each, Holm-corrected."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from ai_photo_detector.image_stats import STAT_NAMES
from ai_photo_detector.monitoring.detectors.base import (
    DetectorResult,
    DriftConfig,
    DriftDetector,
    Sample,
    register_detector,
)


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone)."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[name] = running
    return adjusted


@register_detector
class ImageStatsDrift(DriftDetector):
    name = "image_stats"

    def run(
        self, reference: Sample, live: Sample, config: DriftConfig, threshold: float
    ) -> DetectorResult:
        per_stat: dict[str, dict[str, float]] = {}
        raw: dict[str, float] = {}
        for name in STAT_NAMES:
            ref, cur = reference.image_stats.get(name), live.image_stats.get(name)
            if ref is None or cur is None or len(ref) == 0 or len(cur) == 0:
                continue
            ks = stats.ks_2samp(ref, cur)
            raw[name] = float(ks.pvalue)
            per_stat[name] = {
                "ks_statistic": float(ks.statistic),
                "reference_median": float(np.median(ref)),
                "live_median": float(np.median(cur)),
            }
        adjusted = holm(raw) if raw else {}
        for name, p in adjusted.items():
            per_stat[name]["p_value"] = raw[name]
            per_stat[name]["p_adjusted"] = p
        details: dict[str, Any] = {"per_stat": per_stat}
        return DetectorResult(
            p_value=min(adjusted.values()) if adjusted else 1.0,
            statistics={f"{name}_p_adjusted": p for name, p in adjusted.items()},
            details=details,
            skipped=None if per_stat else "no image statistics measured alike on both sides",
        )
