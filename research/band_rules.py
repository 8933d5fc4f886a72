"""How strict must the 'ai' band be for real photos of an unseen source to stay out of it?

Reads a training run's out-of-source predictions (``held_out.json``, written by every run
that evaluates leave one source out) and replays the project's own calibration under other
rules, each source's row fitted without that source, exactly as the model card's table is:

- ``calibration.ai_band_rule``: whether every source keeps its real photos within that share
  (``strictest_source``) or the sources' shares average within it (``source_average``);
- ``calibration.ai_band_fpr``: the share of each held-out source's real photos allowed into
  the 'ai' band when the bound is fitted (the shipped default 2 %);
- a familiarity gate: an image whose distance to the training embeddings is above ``gate``
  times the familiarity threshold is answered 'uncertain' (1.0 is the shipped check).

Run: python -m research.band_rules RUN_DIR
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from itertools import product
from pathlib import Path

from ai_photo_detector.evaluation.by_source import HeldOutSource
from ai_photo_detector.evaluation.finalize import source_report
from ai_photo_detector.evaluation.made_from import load_held_out
from ai_photo_detector.settings import Settings

RULES = ("strictest_source", "source_average")
RATES = (0.05, 0.02, 0.01)
GATES = (1.0, 0.9, 0.8)


def gated(folds: list[HeldOutSource], gate: float) -> list[HeldOutSource]:
    """The folds with 'unfamiliar' re-drawn at ``gate`` times each fold's threshold."""
    out = []
    for fold in folds:
        if fold.distance_ratio is None:
            raise SystemExit("this run's held_out.json has no distances: re-run the training")
        out.append(replace(fold, unfamiliar=fold.distance_ratio > gate))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--labels", default="ai,real", help="the run's labels, in model order")
    args = parser.parse_args()
    labels = args.labels.split(",")
    folds = load_held_out(args.run_dir)
    print(
        "| rule | ai_band_fpr | gate | source | real in 'ai' | AI in 'ai' | AI in 'real' | "
        "uncertain |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rule, rate, gate in product(RULES, RATES, GATES):
        settings = Settings(calibration={"ai_band_fpr": rate, "ai_band_rule": rule})
        report = source_report(gated(folds, gate), labels, "ai", settings)
        for row in report["rows"]:
            print(
                f"| {rule} | {rate:.3f} | {gate:.1f} | {row['source']} | "
                f"{row['ai_band_fpr']:.1%} ({row['ai_band_false_positives']}) | "
                f"{row['ai_band_tpr']:.1%} | {row['real_band_fnr']:.1%} | "
                f"{row['uncertain_share']:.1%} |"
            )
        summary = report["summary"]
        print(
            f"| {rule} | {rate:.3f} | {gate:.1f} | **all** | "
            f"pooled {summary['pooled_ai_band_fpr']:.2%}, "
            f"worst {summary['worst_ai_band_fpr']:.1%} | | | "
            f"{summary['uncertain_share']:.1%} |"
        )


if __name__ == "__main__":
    main()
