"""How much each training image counts: per (source, label) group, so that a small source is
not drowned by a large one when a team asks for it. Shared by the frozen heads (sample weights
of the fit) and fine-tuning (a weighted sampler)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import numpy as np
from numpy.typing import NDArray


def group_weights(
    groups: list[tuple[str, int]],
    weighting: str,
    boosted: Collection[str] = (),
    boost: float = 1.0,
) -> NDArray[np.float64] | None:
    """Sample weights that give each (source, label) group the weight ``weighting`` asks for,
    then raise each group of a ``boosted`` source to ``boost`` times the mean total of the
    other groups; scaled to a mean of 1. None for ``none`` with nothing boosted (the fit then
    balances the classes overall)."""
    boosted = set(boosted) & {source for source, _ in groups}
    if weighting == "none" and not boosted:
        return None
    sizes = Counter(groups)
    if weighting == "none":  # classes balanced over the ordinary sources, as the unweighted fit
        ordinary_rows = [g for g in groups if g[0] not in boosted] or groups
        per_label = Counter(label for _, label in ordinary_rows)
        weights = np.asarray([1 / max(per_label[label], 1) for _, label in groups], np.float64)
    else:
        power = 1.0 if weighting == "balanced" else 0.5
        weights = np.asarray([sizes[group] ** -power for group in groups], np.float64)
    if boosted:
        members = {group: [i for i, g in enumerate(groups) if g == group] for group in sizes}
        totals = {group: weights[index].sum() for group, index in members.items()}
        ordinary = [total for (source, _), total in totals.items() if source not in boosted]
        target = boost * float(np.mean(ordinary)) if ordinary else 1.0
        for group, index in members.items():
            if group[0] in boosted:
                weights[index] *= target / totals[group]
    result: NDArray[np.float64] = weights * (len(weights) / weights.sum())
    return result
