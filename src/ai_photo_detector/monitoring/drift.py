"""Drift: is a window of live traffic still like the bundle's validation reference?

Every registered detector (``monitoring/detectors``: score distribution, image statistics,
predicted-label share, embeddings) gives one p-value; a Bonferroni correction over however many
are registered keeps the whole report's false-alarm rate near ``alpha``.
"""

from __future__ import annotations

from typing import Any

from ai_photo_detector.monitoring.detectors import DETECTORS, DriftConfig, Sample

__all__ = ["DriftConfig", "Sample", "detect"]


def detect(reference: Sample, live: Sample, config: DriftConfig) -> dict[str, Any]:
    """The full drift report of one live window against the reference."""
    threshold = config.alpha / len(DETECTORS)  # Bonferroni over the registered detectors
    results = {
        name: detector.run(reference, live, config, threshold)
        for name, detector in DETECTORS.items()
    }
    drifted = [name for name, result in results.items() if result.p_value < threshold]
    families = {}
    for name, result in results.items():
        families[name] = {**result.report(), "drift": name in drifted}
    severe = len(drifted) >= 2 or any(result.critical for result in results.values())
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
        "statistics": {name: result.statistics for name, result in results.items()},
    }
