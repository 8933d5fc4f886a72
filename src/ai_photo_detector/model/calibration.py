"""Temperature scaling, decision threshold and bands, fitted on validation outputs."""

from __future__ import annotations

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


def ai_band_floor(
    real_scores: NDArray[np.floating],
    real_sources: NDArray[np.str_],
    target_fpr: float,
    min_reals: int,
) -> float:
    """Lowest 'ai' band bound keeping every source's real photos in the band at or below
    ``target_fpr``: the strictest per-source bound over sources with at least ``min_reals``
    real photos (all real photos pooled when no source has that many)."""
    bounds = [
        threshold_for_fpr(real_scores[real_sources == source], target_fpr)
        for source in np.unique(real_sources)
        if int((real_sources == source).sum()) >= min_reals
    ]
    return max(bounds) if bounds else threshold_for_fpr(real_scores, target_fpr)
