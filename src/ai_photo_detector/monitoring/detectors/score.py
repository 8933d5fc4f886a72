"""Calibrated score distribution: two-sample Kolmogorov-Smirnov test, with PSI and Wasserstein
distance as effect sizes (a large PSI makes drift critical)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from ai_photo_detector.monitoring.detectors.base import (
    DetectorResult,
    DriftConfig,
    DriftDetector,
    Sample,
    register_detector,
)


def psi(reference: NDArray[np.float64], live: NDArray[np.float64], bins: int = 10) -> float:
    """Population stability index over reference deciles."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / len(reference)
    actual = np.histogram(live, edges)[0] / len(live)
    expected, actual = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@register_detector
class ScoreDrift(DriftDetector):
    name = "score"

    def run(
        self, reference: Sample, live: Sample, config: DriftConfig, threshold: float
    ) -> DetectorResult:
        ks = stats.ks_2samp(reference.scores, live.scores)
        index = psi(reference.scores, live.scores)
        return DetectorResult(
            p_value=float(ks.pvalue),
            statistics={
                "ks_statistic": float(ks.statistic),
                "psi": index,
                "wasserstein": float(stats.wasserstein_distance(reference.scores, live.scores)),
                "reference_mean": float(np.mean(reference.scores)),
                "live_mean": float(np.mean(live.scores)),
            },
            critical=index >= config.psi_critical,
        )
