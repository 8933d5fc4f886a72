"""Embeddings: maximum mean discrepancy with an RBF kernel on a PCA projection, p-value from a
permutation test."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.monitoring.detectors.base import (
    DetectorResult,
    DriftConfig,
    DriftDetector,
    Sample,
    register_detector,
)


def _pca(
    reference: NDArray[np.float64], components: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    return mean, vt[: min(components, vt.shape[0])]


def mmd_permutation_test(
    x: NDArray[np.float64], y: NDArray[np.float64], permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Biased MMD² with an RBF kernel (median-heuristic bandwidth) and its permutation p-value."""
    pooled = np.concatenate([x, y])
    sq = np.sum(pooled**2, axis=1)
    distances = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0.0)
    median = np.median(distances[np.triu_indices(len(pooled), k=1)])
    kernel = np.exp(-distances / max(median, 1e-12))
    n, m = len(x), len(y)

    def statistic(is_x: NDArray[np.bool_]) -> float:
        weights = np.where(is_x, 1.0 / n, -1.0 / m)
        return float(weights @ kernel @ weights)

    membership = np.zeros(n + m, dtype=bool)
    membership[:n] = True
    observed = statistic(membership)
    exceed = sum(statistic(rng.permutation(membership)) >= observed for _ in range(permutations))
    return observed, (1 + exceed) / (1 + permutations)


@register_detector
class EmbeddingDrift(DriftDetector):
    name = "embedding"

    def run(
        self, reference: Sample, live: Sample, config: DriftConfig, threshold: float
    ) -> DetectorResult:
        rng = np.random.default_rng(config.seed)
        ref = np.asarray(reference.embeddings, dtype=np.float64)
        cur = np.asarray(live.embeddings, dtype=np.float64)
        if len(ref) < 10 or len(cur) < 10:
            return DetectorResult(1.0, statistics={"mmd2": 0.0}, skipped="too few embeddings")
        # PCA on the pooled sample: fitted on the reference alone it would overfit the
        # reference's own directions and make fresh samples look different; pooled, the
        # permutation test stays exact because the projection treats both samples alike.
        mean, basis = _pca(np.concatenate([ref, cur]), config.pca_components)
        ref_proj, cur_proj = (ref - mean) @ basis.T, (cur - mean) @ basis.T
        limit = config.mmd_max_samples
        if len(ref_proj) > limit:
            ref_proj = ref_proj[rng.choice(len(ref_proj), limit, replace=False)]
        if len(cur_proj) > limit:
            cur_proj = cur_proj[rng.choice(len(cur_proj), limit, replace=False)]
        # A permutation p-value is never below 1/(P+1): take enough permutations to reach the
        # family threshold, or this detector could never fire.
        permutations = max(config.permutations, math.ceil(2 / threshold))
        mmd2, p_value = mmd_permutation_test(ref_proj, cur_proj, permutations, rng)
        return DetectorResult(
            p_value=p_value,
            statistics={"mmd2": mmd2},
            details={"components": int(basis.shape[0]), "permutations": permutations},
        )
