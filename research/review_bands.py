"""After K reviews of a new source, what keeps its AI photos out of the `ai` band?

For each shared source S in turn as the new one, and several random draws: S is split into a
pool (60 %) and a test part (40 %); K pool photos (half real, half AI) are reviewed and join the
other sources' training data, boosted as ``retrain`` boosts feedback (the project's head,
C = 0.01, on a bundle's plain-view embeddings). On S's test part, with the `ai` band at the
strictest-source bound of today's rule (5 % of each training source's real photos, scored by a
head fitted without that source; the reviewed photos cross-fitted in 5 folds):

- ``recall`` / ``fpr``: the band alone (the share of S's AI / real photos at or above it);
- ``unfamiliar before`` / ``after``: the share of S's photos the unfamiliar abstention holds
  back ('uncertain' whatever the score), before and after the reviews join the reference (10
  nearest training photos, 32 principal components, threshold at the 95 % quantile of held-out
  in-source photos, as training fits it), and ``recall with abstention``;
- two ways to let the reviews widen what is familiar: ``near reviewed`` (the served rule, also
  familiar when the mean distance to the 3 nearest reviewed photos, standardised, in all
  dimensions, is within the reviewed photos' own 95 % leave-one-out quantile), ``weighted
  projection`` (the reviewed photos weigh as much as an
  average training source in the principal components);
- ``routed`` / ``routed recall``: photos whose 10 nearest training photos are mostly reviewed
  ones get a band fitted on the reviewed photos alone (their highest cross-fitted real score);
- ``near routed``: every photo the served rule finds near the reviewed photos gets that band
  instead (their highest cross-fitted real score), with its recall and false-positive rate on
  S;
- what the widening risks on sources nobody reviewed (each other source held out of the head
  and the reference): the share of their real photos it newly lets reach the `ai` band.

Run: python -m research.review_bands BUNDLE [--k 40] [--draws 3] [--source S ...]
     (embeddings shared with research.active_selection, kept in research/features/)
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from ai_photo_detector.model.calibration import threshold_for_fpr
from ai_photo_detector.model.familiarity import FamiliarityReference, fit_reference
from research.active_selection import head_scores, load

FPR = 0.05
NEIGHBOURS = 10
COMPONENTS = 32
FOLDS = 5
MIN_REALS = 20
QUANTILE = 0.95


def _p(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    return 1 / (1 + np.exp(-logits))


def cross_fitted(features, labels, groups, base, reviewed) -> NDArray[np.float64]:  # type: ignore[no-untyped-def]
    """Each reviewed photo scored by a head fitted on the base and the other folds."""
    scores = np.zeros(len(reviewed))
    folds = np.arange(len(reviewed)) % FOLDS
    for fold in range(FOLDS):
        train = np.concatenate([base, reviewed[folds != fold]])
        part = folds == fold
        scores[part] = head_scores(features, labels, groups, train, reviewed[part])
    return _p(scores)


def global_band(features, labels, groups, base, reviewed) -> float:  # type: ignore[no-untyped-def]
    """Today's strictest-source rule over the base sources and the reviewed photos."""
    bounds = []
    for source in np.unique(groups[base]):
        held = base[groups[base] == source]
        kept = np.concatenate([base[groups[base] != source], reviewed])
        reals = held[labels[held] == 0]
        if len(reals) >= MIN_REALS:
            scores = _p(head_scores(features, labels, groups, kept, reals))
            bounds.append(threshold_for_fpr(scores, FPR))
    review_scores = cross_fitted(features, labels, groups, base, reviewed)
    review_reals = review_scores[labels[reviewed] == 0]
    if len(review_reals) >= MIN_REALS:
        bounds.append(threshold_for_fpr(review_reals, FPR))
    return max(bounds)


def _reference(features, fitted, extra=None) -> FamiliarityReference:  # type: ignore[no-untyped-def]
    """The familiarity reference of ``fitted``; its projection fitted with ``extra`` rows too."""
    rows = features[fitted] if extra is None else np.concatenate([features[fitted], extra])
    reference = fit_reference(rows, k=NEIGHBOURS, components=COMPONENTS, max_points=100_000)
    return replace(reference, points=reference.project(features[fitted]))


def _limit(reference: FamiliarityReference, held: NDArray[np.float32]) -> float:
    return float(np.quantile(reference.distances(held), QUANTILE))


def _among_reviewed(reference, features, reviewed, photos) -> NDArray[np.bool_]:  # type: ignore[no-untyped-def]
    """Within the reviewed photos' own spread (the served rule's part for them alone)."""
    widened = reference.with_reviewed(features[reviewed], QUANTILE)
    return widened.reviewed_ratios(features[photos]) <= 1


def _near_reviewed(reference, features, reviewed, photos, limit) -> NDArray[np.bool_]:  # type: ignore[no-untyped-def]
    """Familiar by the served rule once the reviewed photos widen the reference
    (``FamiliarityReference.with_reviewed``: within the reviewed photos' own leave-one-out
    quantile of the mean distance to the 3 nearest of them, standardised, all dimensions)."""
    widened = reference.with_reviewed(features[reviewed], QUANTILE)
    return widened.ratios(features[photos], limit) <= 1


def _weighted_extra(features, reviewed, fitted, sources: int) -> NDArray[np.float32]:  # type: ignore[no-untyped-def]
    repeats = max(1, len(fitted) // (sources * len(reviewed)))
    return np.repeat(features[reviewed], repeats - 1, axis=0) if repeats > 1 else None


def one_draw(features, labels, groups, new: str, k: int, seed: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    mine = [int(i) for i in np.where(groups == new)[0]]
    rng.shuffle(mine)
    pool, test = mine[: int(0.6 * len(mine))], np.asarray(mine[int(0.6 * len(mine)) :])
    reals = [i for i in pool if labels[i] == 0]
    ais = [i for i in pool if labels[i] == 1]
    picked = rng.sample(reals, min(k // 2, len(reals))) + rng.sample(ais, min(k - k // 2, len(ais)))
    reviewed = np.asarray(picked)
    groups = groups.copy()
    groups[reviewed] = "reviewed"
    base = np.where((groups != new) & (groups != "reviewed"))[0]
    sources = len(np.unique(groups[base]))
    ai_from = global_band(features, labels, groups, base, reviewed)
    p_test = _p(head_scores(features, labels, groups, np.concatenate([base, reviewed]), test))
    y = labels[test]
    in_band = p_test >= ai_from

    order = np.random.default_rng(seed).permutation(base)
    held, kept = order[: len(base) // 10], order[len(base) // 10 :]
    fitted = np.concatenate([kept, reviewed])
    before = _reference(features, kept)
    after = _reference(features, fitted)
    limit = _limit(after, features[held])
    unfamiliar_before = before.distances(features[test]) > _limit(before, features[held])
    unfamiliar = after.distances(features[test]) > limit
    near = _near_reviewed(after, features, reviewed, test, limit)
    near_familiar = near | ~unfamiliar
    weighted = _reference(features, fitted, _weighted_extra(features, reviewed, fitted, sources))
    unfamiliar_weighted = weighted.distances(features[test]) > _limit(weighted, features[held])

    # Photos mostly among reviewed neighbours take a band fitted on the reviewed photos alone.
    review_scores = cross_fitted(features, labels, groups, base, reviewed)
    review_from = float(np.nextafter(review_scores[labels[reviewed] == 0].max(), 2))
    neighbours = _neighbours(after, features[test])
    routed = np.isin(neighbours, np.arange(len(kept), len(fitted))).mean(axis=1) > 0.5
    routed_band = p_test >= np.where(routed, min(review_from, ai_from), ai_from)
    among = _among_reviewed(after, features, reviewed, test)
    near_routed = (p_test >= np.where(among, min(review_from, ai_from), ai_from)) & near_familiar

    def recall(mask: NDArray[np.bool_]) -> float:
        return float(mask[y == 1].mean())

    row = {
        "roc_auc": roc_auc_score(y, p_test),
        "recall": recall(in_band),
        "fpr": float(in_band[y == 0].mean()),
        "unfamiliar before": float(unfamiliar_before.mean()),
        "unfamiliar after": float(unfamiliar.mean()),
        "recall with abstention": recall(in_band & ~unfamiliar),
        "near reviewed: unfamiliar": float((unfamiliar & ~near).mean()),
        "near reviewed: recall": recall(in_band & ~(unfamiliar & ~near)),
        "weighted projection: unfamiliar": float(unfamiliar_weighted.mean()),
        "weighted projection: recall": recall(in_band & ~unfamiliar_weighted),
        "routed": float(routed.mean()),
        "routed recall (no abstention)": recall(routed_band),
        "near routed: recall": recall(near_routed),
        "near routed: fpr": float(near_routed[y == 0].mean()),
    }
    row.update(_unseen_risk(features, labels, groups, base, reviewed, ai_from, review_from))
    return row


def _neighbours(reference: FamiliarityReference, photos: NDArray[np.float32]) -> NDArray[np.intp]:
    queries = reference.project(photos)
    squared = ((queries[:, None, :] - reference.points[None, :, :]) ** 2).sum(-1)
    return np.argsort(squared, axis=1)[:, : reference.k]


def _unseen_risk(
    features, labels, groups, base, reviewed, ai_from, review_from
) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Each other source B held out of the head and the reference: the share of its real photos
    each widening newly lets reach the `ai` band (today's abstention and band as the baseline)."""
    sources = len(np.unique(groups[base]))
    counts = {"today": 0, "near": 0, "weighted": 0, "routed": 0, "near routed": 0, "reals": 0}
    for source in np.unique(groups[base]):
        held = base[groups[base] == source]
        kept = base[groups[base] != source]
        fitted = np.concatenate([kept, reviewed])
        reals = held[labels[held] == 0]
        scores = _p(head_scores(features, labels, groups, fitted, reals))
        reference = _reference(features, fitted)
        calibration = features[kept[::10]]
        limit = _limit(reference, calibration)
        unfamiliar = reference.distances(features[reals]) > limit
        near = _near_reviewed(reference, features, reviewed, reals, limit)
        extra = _weighted_extra(features, reviewed, fitted, sources)
        weighted = _reference(features, fitted, extra)
        familiar_weighted = weighted.distances(features[reals]) <= _limit(weighted, calibration)
        neighbours = _neighbours(reference, features[reals])
        routed = np.isin(neighbours, np.arange(len(kept), len(fitted))).mean(axis=1) > 0.5
        in_band = scores >= ai_from
        counts["today"] += int((in_band & ~unfamiliar).sum())
        counts["near"] += int((in_band & unfamiliar & near).sum())
        counts["weighted"] += int((in_band & unfamiliar & familiar_weighted).sum())
        lower = routed & ~unfamiliar & (scores >= min(review_from, ai_from)) & ~in_band
        counts["routed"] += int(lower.sum())
        among = _among_reviewed(reference, features, reviewed, reals)
        lower = among & (~unfamiliar | near) & (scores >= min(review_from, ai_from)) & ~in_band
        counts["near routed"] += int(lower.sum())
        counts["reals"] += len(reals)
    reals = counts.pop("reals")
    return {f"unseen reals in band: {name}": value / reals for name, value in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--source", nargs="+")
    args = parser.parse_args()
    features, labels, groups = load(args.bundle)
    header: list[str] = []
    for new in args.source or sorted(np.unique(groups)):
        rows = [one_draw(features, labels, groups, new, args.k, 100 + d) for d in range(args.draws)]
        if not header:
            header = list(rows[0])
            print("| new source | " + " | ".join(header) + " |")
            print("|---" * (len(header) + 1) + "|")
        cells = " | ".join(f"{np.mean([r[n] for r in rows]):.3f}" for n in header)
        print(f"| {new} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
