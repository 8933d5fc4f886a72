from __future__ import annotations

import numpy as np
import pytest

from ai_photo_detector.model.calibration import (
    decision_threshold,
    fit_temperature,
    lower_band_for_fnr,
    threshold_for_fpr,
)


def test_threshold_meets_the_fpr_target() -> None:
    negatives = np.linspace(0.0, 0.5, 100)
    threshold = threshold_for_fpr(negatives, 0.05)
    assert (negatives >= threshold).mean() <= 0.05
    assert (negatives >= np.nextafter(threshold, 0) - 0.006).mean() > 0.05  # and is the lowest


def test_decision_threshold_sits_in_the_middle_of_a_clean_margin() -> None:
    negatives, positives = np.full(50, 0.01), np.full(50, 0.99)
    threshold = decision_threshold(negatives, positives, 0.02)
    assert threshold == pytest.approx(0.5, abs=1e-6)  # not the edge at 0.01
    overlapping = decision_threshold(np.linspace(0, 0.6, 100), np.linspace(0.4, 1, 100), 0.05)
    assert (np.linspace(0, 0.6, 100) >= overlapping).mean() <= 0.05


def test_real_band_bound_limits_missed_ai() -> None:
    positives = np.linspace(0, 1, 201)
    bound = lower_band_for_fnr(positives, 0.01)
    assert (positives < bound).mean() <= 0.01


def test_temperature_recovers_a_known_scale_and_stays_bounded() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (2000, 2))
    targets = np.array([rng.random() < np.exp(z[1]) / np.exp(z).sum() for z in true_logits], int)
    assert fit_temperature(true_logits * 3, targets) == pytest.approx(3, rel=0.15)
    separable = np.array([[5.0, -5.0], [-5.0, 5.0]] * 50)
    assert fit_temperature(separable, np.array([0, 1] * 50)) >= 0.5
