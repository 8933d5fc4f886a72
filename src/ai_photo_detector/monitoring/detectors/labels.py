"""Predicted-label share: chi-squared test of homogeneity against the reference counts."""

from __future__ import annotations

import numpy as np
from scipy import stats

from ai_photo_detector.monitoring.detectors.base import (
    DetectorResult,
    DriftConfig,
    DriftDetector,
    Sample,
    register_detector,
)


@register_detector
class LabelDrift(DriftDetector):
    name = "labels"

    def run(
        self, reference: Sample, live: Sample, config: DriftConfig, threshold: float
    ) -> DetectorResult:
        names = sorted(set(reference.labels) | set(live.labels))
        ref_counts = np.asarray([reference.labels.count(label) for label in names], dtype=float)
        live_counts = np.asarray([live.labels.count(label) for label in names], dtype=float)
        if len(names) < 2:
            return DetectorResult(1.0, details={"reference_share": {}, "live_share": {}})
        # Homogeneity of two samples (the reference is a sample too, not exact shares).
        table = np.stack([ref_counts, live_counts]) + 0.5  # smoothed: no empty cells
        result = stats.chi2_contingency(table, correction=False)

        def shares(counts: np.ndarray) -> dict[str, float]:
            return {k: float(v) for k, v in zip(names, counts / counts.sum(), strict=True)}

        return DetectorResult(
            p_value=float(result.pvalue),
            statistics={"chi2": float(result.statistic)},
            details={"reference_share": shares(ref_counts), "live_share": shares(live_counts)},
        )
