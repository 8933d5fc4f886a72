"""How strongly should reviewed feedback be boosted? The new source against the unseen ones.

For each shared source S in turn as the new one, and several random draws: 40 photos of S (half
real, half AI, from a 60 % pool) are reviewed and join the other sources' training data as one
boosted source (the project's head, C = 0.01, on a bundle's plain-view embeddings), each of its
groups weighing ``boost`` average groups (``training.boost_weight``). Reported per boost:

- ``new``: ROC-AUC on S's other 40 %, what the reviews teach;
- ``unseen``: the mean ROC-AUC on each other source U, held out of training as well (trained on
  the sources but S and U, plus the reviewed photos of S): what the boost costs on a kind of
  photo nobody reviewed.

Run: python -m research.boost_study BUNDLE [--draws 3] [--boost 1 3 10]
     (embeddings shared with research.active_selection, kept in research/features/)
"""

from __future__ import annotations

import argparse
import random

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from ai_photo_detector.training.backbones.frozen import fit_linear_head
from ai_photo_detector.training.weighting import group_weights
from research.active_selection import load

K = 40


def auc(features, labels, groups, train, test, boost: float) -> float:  # type: ignore[no-untyped-def]
    rows = [(str(g), int(y)) for g, y in zip(groups[train], labels[train], strict=True)]
    weight = group_weights(rows, "none", boosted={"reviewed"}, boost=boost)
    w, b = fit_linear_head(features[train], labels[train], 2, 0.01, 0, weight)
    logits = features[test] @ w.T + b
    return float(roc_auc_score(labels[test], logits[:, 1] - logits[:, 0]))


def reviewed_of(labels, groups, new: str, seed: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:  # type: ignore[no-untyped-def]
    """K reviewed photos of ``new`` (half of each label, from a 60 % pool) and its test part."""
    rng = random.Random(seed)
    mine = [int(i) for i in np.where(groups == new)[0]]
    rng.shuffle(mine)
    pool, test = mine[: int(0.6 * len(mine))], mine[int(0.6 * len(mine)) :]
    reals = [i for i in pool if labels[i] == 0]
    ais = [i for i in pool if labels[i] == 1]
    half = K // 2
    picked = rng.sample(reals, min(half, len(reals))) + rng.sample(ais, min(half, len(ais)))
    return np.asarray(picked), np.asarray(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--boost", nargs="+", type=float, default=[1.0, 3.0, 10.0])
    args = parser.parse_args()
    features, labels, sources = load(args.bundle)
    names = sorted(np.unique(sources))
    cells = [f"new, boost {b:g} | unseen, boost {b:g}" for b in args.boost]
    print("| new source | " + " | ".join(cells) + " |")
    print("|---" * (2 * len(args.boost) + 1) + "|")
    for new in names:
        found: dict[str, list[float]] = {}
        for draw in range(args.draws):
            reviewed, test = reviewed_of(labels, sources, new, 100 + draw)
            groups = sources.copy()
            groups[reviewed] = "reviewed"
            train = np.concatenate([np.where(sources != new)[0], reviewed])
            for boost in args.boost:
                score = auc(features, labels, groups, train, test, boost)
                found.setdefault(f"new {boost}", []).append(score)
                for unseen in names:
                    if unseen == new:
                        continue
                    held = np.where(sources == unseen)[0]
                    rest = np.where((sources != new) & (sources != unseen))[0]
                    score = auc(
                        features, labels, groups, np.concatenate([rest, reviewed]), held, boost
                    )
                    found.setdefault(f"unseen {boost}", []).append(score)
        row = [
            f"{np.mean(found[f'{kind} {b}']):.3f}" for b in args.boost for kind in ("new", "unseen")
        ]
        print(f"| {new} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
