"""Two training runs' leave-one-source-out figures, paired image by image.

Each run folder keeps the out-of-source predictions of its folds (``held_out.json``). For every
source both runs held out, this prints each run's ROC-AUC, the difference and a 95 % interval of
that difference from a paired bootstrap (the same resampled images scored by both runs), so a
recipe change is told apart from the noise of a small source (chatgpt-gemini has 6 real photos).

Run: python -m research.runs_compare RUN_A RUN_B [--draws 2000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from ai_photo_detector.evaluation.made_from import load_held_out
from ai_photo_detector.model.bundle import load_bundle


def scores_by_path(run: Path) -> dict[str, dict[str, tuple[int, float]]]:
    """source -> image path -> (is AI, AI logit margin) of the fold that held it out."""
    manifest = load_bundle(run / "bundle").manifest
    ai = manifest.ai_index
    found: dict[str, dict[str, tuple[int, float]]] = {}
    for fold in load_held_out(run):
        margin = fold.logits[:, ai] - np.delete(fold.logits, ai, axis=1).max(axis=1)
        found[fold.source] = {
            path: (int(label == manifest.ai_label), float(value))
            for path, label, value in zip(fold.paths, fold.labels, margin, strict=True)
        }
    return found


def paired(
    a: dict[str, tuple[int, float]], b: dict[str, tuple[int, float]], draws: int, seed: int
) -> dict[str, float]:
    paths = sorted(set(a) & set(b))
    truth = np.asarray([a[p][0] for p in paths])
    first = np.asarray([a[p][1] for p in paths])
    second = np.asarray([b[p][1] for p in paths])
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(draws):
        pick = rng.integers(0, len(paths), len(paths))
        if truth[pick].min() == truth[pick].max():
            continue
        differences.append(
            roc_auc_score(truth[pick], first[pick]) - roc_auc_score(truth[pick], second[pick])
        )
    low, high = np.percentile(differences, [2.5, 97.5])
    auc_a, auc_b = roc_auc_score(truth, first), roc_auc_score(truth, second)
    return {"images": len(paths), "a": auc_a, "b": auc_b, "diff": auc_a - auc_b, "low": low,
            "high": high}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    first, second = scores_by_path(args.run_a), scores_by_path(args.run_b)
    print(f"A = {args.run_a}, B = {args.run_b}")
    print("| held-out source | images | ROC-AUC A | ROC-AUC B | A - B | 95 % interval |")
    print("|---|---|---|---|---|---|")
    means = []
    for source in sorted(set(first) & set(second)):
        row = paired(first[source], second[source], args.draws, args.seed)
        means.append((row["a"], row["b"]))
        print(
            f"| {source} | {row['images']} | {row['a']:.3f} | {row['b']:.3f} | "
            f"{row['diff']:+.3f} | {row['low']:+.3f} to {row['high']:+.3f} |"
        )
    mean_a, mean_b = np.mean(means, axis=0)
    print(f"| mean | | {mean_a:.3f} | {mean_b:.3f} | {mean_a - mean_b:+.3f} | |")


if __name__ == "__main__":
    main()
