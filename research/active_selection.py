"""Which 40 photos of a new source should reviewers label first?

For each shared source S in turn, the other sources train the project's logistic head
(C = 0.01) on a detector's embedding (the layer-7 mean token of the default recipe, plain
view). S is split at random into a pool (what waits in the review queue, 60 %) and a test part
(40 %). A strategy picks k photos of the pool without seeing their labels; they join training
as one boosted source (its (source, label) groups raised to the average group's weight, as
``retrain`` boosts reviewed feedback), and the head scores the test part: ROC-AUC, and the
recall at 5 % false positives. Strategies:

- ``random``: k photos of the pool at random (what an unordered queue gives);
- ``balanced``: half real and half AI at random (the drill's draw; it needs the labels, so it is
  a reference, not a strategy a queue can follow);
- ``uncertain``: the k photos the current head is least sure of (logit nearest 0);
- ``coreset``: greedy k-centre on the standardised embeddings (each pick the photo furthest from
  the picks so far, and from the training data);
- ``clusters``: k-means into k clusters, the photo nearest each centre;
- ``clusters_uncertain``: k-means into k clusters, the least certain photo of each.

Run: python -m research.active_selection BUNDLE [--k 20 40] [--draws 10]
     (BUNDLE: any default-recipe bundle; the embeddings of every shared photo are extracted
     once, about 2 minutes, and kept in research/features/active-embeddings.npz.)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from benchmarks.new_source import DATASETS, SOURCES, embeddings
from numpy.typing import NDArray
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score, roc_curve

from ai_photo_detector.data.discovery import discover
from ai_photo_detector.settings import Settings
from ai_photo_detector.training.backbones.frozen import fit_linear_head
from ai_photo_detector.training.weighting import group_weights

OUT = Path(__file__).resolve().parent / "features"
CACHE = OUT / "active-embeddings.npz"

# (pool embeddings, the current head's logits on them, their labels, k, rng) -> k pool indices
Picker = Callable[
    [NDArray[np.float32], NDArray[np.float64], NDArray[np.int64], int, np.random.Generator],
    NDArray[np.intp],
]


def load(bundle: Path) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.str_]]:
    if CACHE.is_file():
        data = np.load(CACHE)
        return data["features"], data["labels"], data["sources"]
    settings = Settings()
    samples = discover([DATASETS / s for s in SOURCES], settings.data.extensions)
    features = embeddings(bundle, samples)
    labels = np.asarray([s.label == settings.data.ai_label for s in samples], np.int64)
    sources = np.asarray([s.source for s in samples])
    OUT.mkdir(exist_ok=True)
    np.savez(CACHE, features=features, labels=labels, sources=sources)
    return features, labels, sources


def head_scores(
    features: NDArray[np.float32],
    labels: NDArray[np.int64],
    groups: NDArray[np.str_],
    train: NDArray[np.intp],
    score: NDArray[np.intp],
) -> NDArray[np.float64]:
    """The shipped head fitted on ``train`` with the group ``reviewed`` boosted (as ``retrain``
    weighs reviewed feedback); its logits on ``score``."""
    rows = [(str(g), int(y)) for g, y in zip(groups[train], labels[train], strict=True)]
    weight = group_weights(rows, "none", boosted={"reviewed"})
    w, b = fit_linear_head(features[train], labels[train], 2, 0.01, 0, weight)
    logits = features[score] @ w.T + b
    return (logits[:, 1] - logits[:, 0]).astype(np.float64)


def _standardised(x: NDArray[np.float32], reference: NDArray[np.float32]) -> NDArray[np.float64]:
    mean, scale = reference.mean(0), reference.std(0) + 1e-6
    return (x - mean) / scale


def pick_random(pool, margin, labels, k, rng):  # type: ignore[no-untyped-def]
    return rng.choice(len(pool), size=k, replace=False)


def pick_balanced(pool, margin, labels, k, rng):  # type: ignore[no-untyped-def]
    ai, real = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    return np.concatenate(
        [rng.choice(ai, size=k - k // 2, replace=False), rng.choice(real, k // 2, replace=False)]
    )


def pick_uncertain(pool, margin, labels, k, rng):  # type: ignore[no-untyped-def]
    return np.argsort(np.abs(margin))[:k]


def pick_coreset(pool, margin, labels, k, rng):  # type: ignore[no-untyped-def]
    x = _standardised(pool, pool)
    start = int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))  # the most central photo first
    chosen = [start]
    distance = ((x - x[start]) ** 2).sum(1)
    for _ in range(k - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, ((x - x[nxt]) ** 2).sum(1))
    return np.asarray(chosen)


def _clusters(
    pool: NDArray[np.float32], k: int, rng: np.random.Generator
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Each photo's k-means cluster and its squared distance to the cluster's centre."""
    x = _standardised(pool, pool)
    model = KMeans(n_clusters=k, n_init=3, random_state=int(rng.integers(1 << 30))).fit(x)
    distance = ((x - model.cluster_centers_[model.labels_]) ** 2).sum(1)
    return model.labels_, distance


def pick_clusters(pool, margin, labels, k, rng):  # type: ignore[no-untyped-def]
    assigned, distance = _clusters(pool, k, rng)
    return np.asarray(
        [np.flatnonzero(assigned == c)[np.argmin(distance[assigned == c])] for c in range(k)]
    )


def pick_clusters_uncertain(pool, margin, labels, k, rng):  # type: ignore[no-untyped-def]
    assigned, _ = _clusters(pool, k, rng)
    absolute = np.abs(margin)
    return np.asarray(
        [np.flatnonzero(assigned == c)[np.argmin(absolute[assigned == c])] for c in range(k)]
    )


STRATEGIES: dict[str, Picker] = {
    "random": pick_random,
    "balanced": pick_balanced,
    "uncertain": pick_uncertain,
    "coreset": pick_coreset,
    "clusters": pick_clusters,
    "clusters_uncertain": pick_clusters_uncertain,
}


def recall_at(y: NDArray[np.int64], score: NDArray[np.float64], fpr: float) -> float:
    false, true, _ = roc_curve(y, score)
    return float(true[np.searchsorted(false, fpr, side="right") - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--k", nargs="+", type=int, default=[20, 40])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--source", nargs="+", default=SOURCES)
    args = parser.parse_args()
    features, labels, sources = load(args.bundle)
    print("| held out | k | strategy | ROC-AUC mean ± sd | recall at 5 % FPR | AI share picked |")
    print("|---|---|---|---|---|---|")
    for held in args.source:
        new = np.flatnonzero(sources == held)
        others = np.flatnonzero(sources != held)
        if len(new) < 60:
            continue
        for k in args.k:
            results: dict[str, list[tuple[float, float, float]]] = {s: [] for s in STRATEGIES}
            for draw in range(args.draws):
                rng = np.random.default_rng(draw)
                shuffled = rng.permutation(new)
                pool, test = shuffled[: int(0.6 * len(new))], shuffled[int(0.6 * len(new)) :]
                margin = head_scores(features, labels, sources, others, pool)
                for name, pick in STRATEGIES.items():
                    picked = pool[pick(features[pool], margin, labels[pool], k, rng)]
                    groups = sources.copy()
                    groups[picked] = "reviewed"
                    train = np.concatenate([others, picked])
                    score = head_scores(features, labels, groups, train, test)
                    results[name].append(
                        (
                            roc_auc_score(labels[test], score),
                            recall_at(labels[test], score, 0.05),
                            labels[picked].mean(),
                        )
                    )
            for name, found in results.items():
                auc, recall, ai_share = np.asarray(found).T
                print(
                    f"| {held} | {k} | {name} | {auc.mean():.3f} ± {auc.std():.3f} | "
                    f"{recall.mean():.1%} | {ai_share.mean():.0%} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
