"""Drift detectors: is a window of live traffic still like the bundle's validation reference?

Four families, each giving one p-value, combined with a Bonferroni correction so that the
whole report keeps its false-alarm rate near ``alpha``:

- calibrated score distribution: two-sample Kolmogorov-Smirnov test (plus PSI and
  Wasserstein distance, reported as effect sizes);
- image statistics (brightness, contrast, saturation, sharpness, JPEG quality): one KS test
  each, Holm-corrected;
- predicted-label share: chi-squared test of homogeneity against the reference counts;
- embeddings: maximum mean discrepancy with an RBF kernel on a PCA projection fitted on the
  reference, p-value from a permutation test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from ai_photo_detector.image_stats import STAT_NAMES

FAMILIES = ("score", "image_stats", "labels", "embedding")


@dataclass
class DriftConfig:
    alpha: float = 0.01
    psi_critical: float = 0.25
    pca_components: int = 16
    permutations: int = 200
    mmd_max_samples: int = 300
    seed: int = 0


@dataclass
class Sample:
    """Scores, predicted labels, image statistics and embeddings of a set of images."""

    scores: NDArray[np.float64]
    labels: list[str]
    image_stats: dict[str, NDArray[np.float64]]
    embeddings: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.scores)


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


def score_drift(reference: Sample, live: Sample) -> dict[str, Any]:
    ks = stats.ks_2samp(reference.scores, live.scores)
    return {
        "p_value": float(ks.pvalue),
        "ks_statistic": float(ks.statistic),
        "psi": psi(reference.scores, live.scores),
        "wasserstein": float(stats.wasserstein_distance(reference.scores, live.scores)),
        "reference_mean": float(np.mean(reference.scores)),
        "live_mean": float(np.mean(live.scores)),
    }


def image_stats_drift(reference: Sample, live: Sample) -> dict[str, Any]:
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
    result: dict[str, Any] = {
        "p_value": min(adjusted.values()) if adjusted else 1.0,
        "per_stat": per_stat,
    }
    if not per_stat:
        result["skipped"] = "no image statistics measured alike on both sides"
    return result


def label_drift(reference: Sample, live: Sample) -> dict[str, Any]:
    labels = sorted(set(reference.labels) | set(live.labels))
    ref_counts = np.asarray([reference.labels.count(label) for label in labels], dtype=float)
    live_counts = np.asarray([live.labels.count(label) for label in labels], dtype=float)
    if len(labels) < 2:
        return {"p_value": 1.0, "reference_share": {}, "live_share": {}}
    # Homogeneity of two samples (the reference is a sample too, not exact shares).
    table = np.stack([ref_counts, live_counts]) + 0.5  # smoothed: no empty cells
    result = stats.chi2_contingency(table, correction=False)
    return {
        "p_value": float(result.pvalue),
        "chi2": float(result.statistic),
        "reference_share": {
            k: float(v) for k, v in zip(labels, ref_counts / ref_counts.sum(), strict=True)
        },
        "live_share": {
            k: float(v) for k, v in zip(labels, live_counts / live_counts.sum(), strict=True)
        },
    }


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


def embedding_drift(
    reference: Sample, live: Sample, config: DriftConfig, threshold: float
) -> dict[str, Any]:
    rng = np.random.default_rng(config.seed)
    ref = np.asarray(reference.embeddings, dtype=np.float64)
    cur = np.asarray(live.embeddings, dtype=np.float64)
    if len(ref) < 10 or len(cur) < 10:
        return {"p_value": 1.0, "mmd2": 0.0, "skipped": "too few embeddings"}
    # PCA on the pooled sample: fitted on the reference alone it would overfit the reference's
    # own directions and make fresh samples look different; pooled, the permutation test stays
    # exact because the projection treats both samples alike.
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
    return {
        "p_value": p_value,
        "mmd2": mmd2,
        "components": int(basis.shape[0]),
        "permutations": permutations,
    }


def detect(reference: Sample, live: Sample, config: DriftConfig) -> dict[str, Any]:
    """The full drift report of one live window against the reference."""
    threshold = config.alpha / len(FAMILIES)  # Bonferroni over the four families
    families = {
        "score": score_drift(reference, live),
        "image_stats": image_stats_drift(reference, live),
        "labels": label_drift(reference, live),
        "embedding": embedding_drift(reference, live, config, threshold),
    }
    drifted = [name for name, result in families.items() if result["p_value"] < threshold]
    for name, result in families.items():
        result["drift"] = name in drifted
    severe = families["score"]["psi"] >= config.psi_critical or len(drifted) >= 2
    severity = "none" if not drifted else "critical" if severe else "warning"
    return {
        "drift": bool(drifted),
        "severity": severity,
        "drifted": drifted,
        "alpha": config.alpha,
        "family_threshold": threshold,
        "reference_size": len(reference),
        "window_size": len(live),
        "detectors": families,
    }
