"""Is this photo like anything the model was trained on? The 'unfamiliar' abstention.

A photo's embedding is standardised and projected on the training embeddings' principal
components; its distance to the training data combines the mean distance to its ``k`` nearest
training points there with how far it lies off those components (what the training data
never varied along: a photo unlike any of it differs there first). Above a threshold
calibrated on held-out images, the answer is 'uncertain' with reason ``unfamiliar``: the
model's probability is not worth much on inputs unlike its training data, however confident
it looks.

Reviewed feedback (a boosted source) widens what is familiar: a new kind of photo is diverse,
and the few dozen reviewed are too few among thousands to pull its photos within the ``k``
nearest, nor to move the principal components. So a photo also counts as familiar when its
mean distance to its nearest reviewed photos (standardised, all dimensions) is within what the
reviewed photos show among themselves (leave-one-out, the same quantile). Measured on the
shared sets (model card, "What holds the `ai` band back after the reviews"): after 40 reviews
of diffusiondb-coco, its unfamiliar share falls from 49 % to 10 %, and at most 0.1 % more of
unseen sources' real photos reach the `ai` band. Shared by training (fit) and serving (check);
numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.settings import AbstentionSettings


@dataclass(frozen=True)
class FamiliarityReference:
    mean: NDArray[np.float32]  # (D,) of the training embeddings
    scale: NDArray[np.float32]  # (D,) their standard deviation
    components: NDArray[np.float32]  # (m, D) principal axes
    points: NDArray[np.float32]  # (n, m) training embeddings, projected
    k: int
    # Reviewed photos, standardised (r, D), and the mean distance to their nearest
    # REVIEWED_NEIGHBOURS within which a photo counts as one of their kind; empty without any.
    reviewed: NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    reviewed_limit: float = 0.0

    def arrays(self) -> dict[str, NDArray[np.float32]]:
        found = {
            "mean": self.mean,
            "scale": self.scale,
            "components": self.components,
            "points": self.points,
        }
        if len(self.reviewed):
            found["reviewed"] = self.reviewed
            found["reviewed_limit"] = np.asarray([self.reviewed_limit], np.float32)
        return found

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray[np.float32]], k: int) -> FamiliarityReference:
        reviewed = arrays.get("reviewed", np.zeros((0, 0), np.float32))
        limit = float(arrays["reviewed_limit"][0]) if "reviewed_limit" in arrays else 0.0
        mean, scale, points = arrays["mean"], arrays["scale"], arrays["points"]
        return cls(mean, scale, arrays["components"], points, k, reviewed, limit)

    def _standard(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        return np.asarray((np.asarray(embeddings, np.float32) - self.mean) / self.scale, np.float32)

    def project(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        return np.asarray(self._standard(embeddings) @ self.components.T, np.float32)

    def distances(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        """Per embedding: the root of the squared mean distance to its ``k`` nearest training
        points on the principal components plus the squared distance off them."""
        return self._distances(self._standard(np.atleast_2d(embeddings)))

    def _distances(self, standard: NDArray[np.float32]) -> NDArray[np.float32]:
        queries = standard @ self.components.T
        off = (standard**2).sum(axis=1) - (queries**2).sum(axis=1)
        # |q - p|^2 = |q|^2 - 2 q.p + |p|^2, in blocks so a large batch stays small in memory
        point_norms = (self.points**2).sum(axis=1)
        result = np.empty(len(queries), np.float32)
        k = min(self.k, len(self.points))
        for start in range(0, len(queries), 256):
            block = queries[start : start + 256]
            squared = (block**2).sum(axis=1)[:, None] - 2 * block @ self.points.T + point_norms
            nearest = np.partition(np.maximum(squared, 0), k - 1, axis=1)[:, :k]
            result[start : start + len(block)] = np.sqrt(nearest).mean(axis=1)
        return np.asarray(np.sqrt(result**2 + np.maximum(off, 0)), np.float32)

    def ratios(self, embeddings: NDArray[np.floating], threshold: float) -> NDArray[np.float32]:
        """Per embedding: how far past familiar it lies (above 1: unfamiliar). The distance to
        the training data over ``threshold``, or, where it is smaller, the distance to the
        nearest reviewed photos over what they show among themselves."""
        standard = self._standard(np.atleast_2d(embeddings))
        ratio = self._distances(standard) / np.float32(threshold)
        if len(self.reviewed):
            ratio = np.minimum(ratio, self._reviewed_ratios(standard))
        return np.asarray(ratio, np.float32)

    def reviewed_ratios(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        """Per embedding: the mean distance to its nearest reviewed photos over the reviewed
        photos' own (above 1: not of their kind)."""
        return self._reviewed_ratios(self._standard(np.atleast_2d(embeddings)))

    def _reviewed_ratios(self, standard: NDArray[np.float32]) -> NDArray[np.float32]:
        near = _mean_nearest(standard, self.reviewed)
        return np.asarray(near / np.float32(self.reviewed_limit), np.float32)

    def with_reviewed(
        self,
        embeddings: NDArray[np.floating],
        quantile: float,
        max_points: int = 1000,
        seed: int = 0,
    ) -> FamiliarityReference:
        """This reference widened by reviewed photos' embeddings (a seeded sample of at most
        ``max_points``); unchanged when there are too few to tell their spread."""
        if len(embeddings) < MIN_REVIEWED:
            return self
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(embeddings), min(max_points, len(embeddings)), replace=False))
        standard = self._standard(np.asarray(embeddings)[keep])
        own = _mean_nearest(standard, standard, leave_out_self=True)
        limit = float(np.quantile(own.astype(np.float64), quantile))
        return replace(self, reviewed=standard, reviewed_limit=limit)


REVIEWED_NEIGHBOURS = 3
# Fewer reviewed photos than this say too little about the spread of their kind to widen it.
MIN_REVIEWED = 10


def _mean_nearest(
    queries: NDArray[np.float32], points: NDArray[np.float32], leave_out_self: bool = False
) -> NDArray[np.float32]:
    """Mean distance of each query to its REVIEWED_NEIGHBOURS nearest ``points``."""
    squared = (queries**2).sum(axis=1)[:, None] - 2 * queries @ points.T + (points**2).sum(axis=1)
    if leave_out_self:
        np.fill_diagonal(squared, np.inf)
    k = min(REVIEWED_NEIGHBOURS, points.shape[0] - int(leave_out_self))
    nearest = np.partition(np.maximum(squared, 0), k - 1, axis=1)[:, :k]
    return np.asarray(np.sqrt(nearest).mean(axis=1), np.float32)


def fit_reference(
    embeddings: NDArray[np.floating],
    k: int = 10,
    components: int = 32,
    max_points: int = 4000,
    seed: int = 0,
) -> FamiliarityReference:
    """The reference built from training embeddings (a seeded sample of at most
    ``max_points``, so the check stays a few milliseconds)."""
    data = np.asarray(embeddings, np.float64)
    mean = data.mean(axis=0)
    scale = data.std(axis=0) + 1e-6
    standard = (data - mean) / scale
    m = max(1, min(components, standard.shape[0] - 1, standard.shape[1]))
    _, _, axes = np.linalg.svd(standard - standard.mean(axis=0), full_matrices=False)
    reference = FamiliarityReference(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        components=axes[:m].astype(np.float32),
        points=np.zeros((0, m), np.float32),
        k=k,
    )
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(data), size=min(max_points, len(data)), replace=False))
    return FamiliarityReference(
        reference.mean,
        reference.scale,
        reference.components,
        reference.project(data[keep]),
        k,
    )


def threshold_for(distances: NDArray[np.floating], quantile: float) -> float:
    """The distance below which ``quantile`` of held-out familiar images fall."""
    if len(distances) == 0:
        return float("inf")
    return float(np.quantile(np.asarray(distances, np.float64), quantile))


def fit_familiarity(
    training: NDArray[np.floating],
    held_out: NDArray[np.floating],
    config: AbstentionSettings,
    reviewed: NDArray[np.floating] | None = None,
) -> tuple[FamiliarityReference, float]:
    """The reference of a fitted model's training embeddings and its threshold from held-out
    (in-source, never fitted on) embeddings: one recipe for the served check and for each
    leave-one-source-out fold's."""
    reference = reference_of(training, config, reviewed)
    return reference, threshold_for(reference.distances(held_out), config.quantile)


def reference_of(
    training: NDArray[np.floating],
    config: AbstentionSettings,
    reviewed: NDArray[np.floating] | None = None,
) -> FamiliarityReference:
    """The reference of ``training``, widened by the ``reviewed`` embeddings when given."""
    reference = fit_reference(training, k=config.neighbours, components=config.components)
    if reviewed is None or not config.widen_with_reviews:
        return reference
    return reference.with_reviewed(reviewed, config.quantile)
