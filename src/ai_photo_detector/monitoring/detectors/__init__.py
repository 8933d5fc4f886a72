"""Drift detectors, a registry: each is one module with one ``@register_detector`` class; the
report's multiple-testing correction counts however many are registered."""

from ai_photo_detector.monitoring.detectors import embedding, image_stats, labels, score
from ai_photo_detector.monitoring.detectors.base import (
    DETECTORS,
    DetectorResult,
    DriftConfig,
    DriftDetector,
    Sample,
    register_detector,
)

__all__ = [
    "DETECTORS",
    "DetectorResult",
    "DriftConfig",
    "DriftDetector",
    "Sample",
    "embedding",
    "image_stats",
    "labels",
    "register_detector",
    "score",
]
