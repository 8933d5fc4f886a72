"""Temperature scaling, decision threshold and bands, fitted on validation outputs."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

from ai_photo_detector.model.inference import softmax


def fit_temperature(logits: NDArray[np.floating], targets: NDArray[np.integer]) -> float:
    """Temperature minimising the validation negative log-likelihood."""

    def nll(log_t: float) -> float:
        probs = softmax(logits, float(np.exp(log_t)))
        picked = probs[np.arange(len(targets)), targets]
        return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())

    # On perfectly separable validation data the likelihood keeps rising as T -> 0; the lower
    # bound stops calibration from turning a lucky split into absolute certainty.
    result = minimize_scalar(nll, bounds=(np.log(0.5), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def threshold_for_fpr(negative_scores: NDArray[np.floating], target_fpr: float) -> float:
    """Smallest threshold whose false-positive rate (score >= threshold) is <= target_fpr."""
    scores = np.sort(np.asarray(negative_scores, dtype=np.float64))
    if scores.size == 0:
        return 0.5
    allowed = int(np.floor(target_fpr * scores.size))  # negatives allowed at or above it
    if allowed >= scores.size:
        return float(scores[0])
    cut = scores[scores.size - allowed - 1]
    return float(min(1.0, np.nextafter(cut, np.inf)))


def lower_band_for_fnr(positive_scores: NDArray[np.floating], target_fnr: float) -> float:
    """Largest bound with at most target_fnr of positives scoring below it."""
    scores = np.sort(np.asarray(positive_scores, dtype=np.float64))
    if scores.size == 0:
        return 0.0
    allowed = int(np.floor(target_fnr * scores.size))
    return float(scores[min(allowed, scores.size - 1)])


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(np.log(p / (1 - p)))


def decision_threshold(
    negative_scores: NDArray[np.floating], positive_scores: NDArray[np.floating], target_fpr: float
) -> float:
    """The threshold meeting ``target_fpr`` with the most recall, centred in its margin.

    Every threshold between the lowest one meeting the FPR target and the lowest positive score
    above it gives the same validation FPR and recall; taking the middle of that gap (in
    log-odds) rather than its edge keeps the operating point stable on new data.
    """
    low = threshold_for_fpr(negative_scores, target_fpr)
    above = np.asarray(positive_scores, dtype=np.float64)
    above = above[above >= low]
    if above.size == 0:
        return low
    high = float(above.min())
    middle = (_log_odds(low) + _log_odds(high)) / 2
    return float(1 / (1 + np.exp(-middle)))


BandRule = Literal["strictest_source", "source_average"]


def ai_band_floor(
    real_scores: NDArray[np.floating],
    real_sources: NDArray[np.str_],
    target_fpr: float,
    min_reals: int,
    rule: BandRule = "strictest_source",
) -> float:
    """Lowest 'ai' band bound for the real photos' scores, by source.

    ``strictest_source``: every source with at least ``min_reals`` real photos keeps at most
    ``target_fpr`` of them below the band (the strictest source's bound; all real photos pooled
    when no source has that many). ``source_average``: the sources' shares, each source weighing
    alike whatever its size, average at most ``target_fpr``: one source the others do not
    resemble no longer sets the band for all.
    """
    names, sizes = np.unique(real_sources, return_counts=True)
    counts = {str(n): int(c) for n, c in zip(names, sizes, strict=True) if c >= min_reals}
    measured = list(counts)
    if not measured:
        return threshold_for_fpr(real_scores, target_fpr)
    if rule == "strictest_source":
        return max(
            threshold_for_fpr(real_scores[real_sources == source], target_fpr)
            for source in measured
        )
    mask = np.isin(real_sources, measured)
    weights = np.asarray([1.0 / counts[source] for source in real_sources[mask]])
    return weighted_threshold_for_fpr(real_scores[mask], weights, target_fpr)


def weighted_threshold_for_fpr(
    scores: NDArray[np.floating], weights: NDArray[np.floating], target_fpr: float
) -> float:
    """Smallest threshold whose weighted share of ``scores`` at or above it is <= target_fpr
    (equal weights: :func:`threshold_for_fpr`)."""
    order = np.argsort(np.asarray(scores, np.float64))[::-1]
    ranked = np.asarray(scores, np.float64)[order]
    share = np.cumsum(np.asarray(weights, np.float64)[order]) / float(np.sum(weights))
    kept = int(np.searchsorted(share, target_fpr * (1 + 1e-12), side="right"))  # may reach it
    if kept >= ranked.size:
        return float(ranked[-1])
    return float(min(1.0, np.nextafter(ranked[kept], np.inf)))
