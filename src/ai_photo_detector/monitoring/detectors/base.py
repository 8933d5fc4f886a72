"""What every drift detector shares: the samples it compares, its settings, its result, and
the registry a detector joins with one decorator."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray


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


@dataclass
class DetectorResult:
    """One detector's verdict on a window: a p-value for the multiple-testing correction,
    ``statistics`` (effect sizes, exported as ``apd_drift_statistic``) and report ``details``."""

    p_value: float
    statistics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    critical: bool = False  # the detector's own reason to call the drift critical

    def report(self) -> dict[str, Any]:
        """As stored and shown: p-value, statistics and details side by side."""
        found: dict[str, Any] = {"p_value": self.p_value, **self.statistics, **self.details}
        if self.skipped:
            found["skipped"] = self.skipped
        return found


class DriftDetector(ABC):
    name: ClassVar[str]

    @abstractmethod
    def run(
        self, reference: Sample, live: Sample, config: DriftConfig, threshold: float
    ) -> DetectorResult:
        """Compare ``live`` with ``reference``; ``threshold`` is the corrected p-value a
        detector must be able to reach (a permutation test sizes itself by it)."""


DETECTORS: dict[str, DriftDetector] = {}


def register_detector(cls: type[DriftDetector]) -> type[DriftDetector]:
    DETECTORS[cls.name] = cls()
    return cls
