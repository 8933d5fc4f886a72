"""Where a drill challenger's photos of the new source end up, and why.

Takes a training run the drill kept (``benchmarks.new_source --keep DIR``: DIR/runs/<version>)
and the drill's held-out source and draw, and reports on the source's test part:

- each (label, band, reasons) count the challenger answers, through the served code;
- the `ai` band's recall and false-positive rate with the band refitted on the run's
  out-of-source scores under other policies (``calibration.ai_band_fpr`` 2 % / 5 %,
  ``ai_band_rule`` strictest_source / source_average), the familiarity flags kept;
- with ``--fold S``, what the reviewed photos did to held-out source S's fold: its real photos
  newly familiar because of them, and how many of those reach that fold's `ai` band.

Run: python -m research.challenger_bands RUN SOURCE [--k 40] [--draw 0] [--fold SOURCE]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.new_source import DATASETS, SOURCES, embeddings, split

from ai_photo_detector.cli.file_predictions import predict_files
from ai_photo_detector.data.discovery import Sample, discover
from ai_photo_detector.evaluation.by_source import HeldOutSource
from ai_photo_detector.evaluation.finalize import fit_calibration, out_of_source_data
from ai_photo_detector.evaluation.made_from import load_held_out
from ai_photo_detector.model.bundle import Bundle, Manifest, load_bundle
from ai_photo_detector.model.familiarity import fit_familiarity
from ai_photo_detector.model.inference import OnnxDetector, softmax
from ai_photo_detector.settings import Settings


def test_part(source: str, k: int, draw: int) -> list[Sample]:
    """The drill's test part of ``source`` for this k and draw (its own split)."""
    settings = Settings()
    everything = discover([DATASETS / s for s in SOURCES], settings.data.extensions)
    new = [s for s in everything if s.source == source]
    return split(new, random.Random(1000 * k + draw))[1]


def source_of(path: str) -> str:
    """A training photo's source: the folder above its label folder."""
    return Path(path).parts[-3]


def without_source(splits: dict[str, list[str]], source: str) -> tuple[list[str], list[str]]:
    """The train and validation paths of the fold that leaves ``source`` out."""
    return (
        [p for p in splits["train"] if source_of(p) != source],
        [p for p in splits["val"] if source_of(p) != source],
    )


class RunEmbeddings:
    """The run's encoder embedding of any photo, each computed once."""

    def __init__(self, run: Path) -> None:
        self.bundle = run / "bundle"
        self.known: dict[str, np.ndarray] = {}

    def of(self, paths: list[str]) -> np.ndarray:
        missing = [p for p in dict.fromkeys(paths) if p not in self.known]
        if missing:
            found = embeddings(self.bundle, [Sample(Path(p), "", "") for p in missing])
            self.known.update(zip(missing, found, strict=True))
        return np.stack([self.known[p] for p in paths])


@dataclass
class Served:
    """A bundle's answers on photos, as the service gives them."""

    probability: np.ndarray  # calibrated AI probability
    unfamiliar: np.ndarray
    is_ai: np.ndarray  # the truth


def served(bundle: Bundle, photos: list[Sample]) -> tuple[Served, list[dict[str, Any]]]:
    found = list(predict_files(OnnxDetector(bundle), [s.path for s in photos], Settings()))
    return (
        Served(
            np.asarray([r["probability"] for r in found]),
            np.asarray(["unfamiliar" in (r.get("reasons") or []) for r in found]),
            np.asarray([s.label == bundle.manifest.ai_label for s in photos]),
        ),
        found,
    )


def fitted_without(
    folds: list[HeldOutSource], source: str, manifest: Manifest, settings: Settings
) -> dict[str, Any]:
    """Temperature and bands fitted on every fold's out-of-source scores but ``source``'s."""
    others = out_of_source_data([f for f in folds if f.source != source])
    return fit_calibration(others, manifest.labels, manifest.ai_label, settings)


def bands_report(run: Path, rest: list[Sample]) -> None:
    bundle = load_bundle(run / "bundle")
    manifest = bundle.manifest
    answers, found = served(bundle, rest)
    counts = collections.Counter(
        (s.label, r["band"], ",".join(r.get("reasons") or []))
        for s, r in zip(rest, found, strict=True)
    )
    print(f"bands served: {manifest.calibration.bands}")
    for key, count in sorted(counts.items()):
        print(f"  {key}: {count}")
    folds = load_held_out(run)
    probability, is_ai = answers.probability, answers.is_ai
    logit = np.log(probability / (1 - probability)) * manifest.calibration.temperature
    for fpr in (0.02, 0.05):
        for rule in ("strictest_source", "source_average"):
            settings = Settings(calibration={"ai_band_fpr": fpr, "ai_band_rule": rule})
            fitted = fit_calibration(
                out_of_source_data(folds), manifest.labels, manifest.ai_label, settings
            )
            p_ai = 1 / (1 + np.exp(-logit / fitted["temperature"]))
            band = (p_ai >= fitted["bands"]["ai_from"]) & ~answers.unfamiliar
            print(
                f"ai_band_fpr {fpr}, {rule}: ai_from {fitted['bands']['ai_from']:.4f}, "
                f"recall {band[is_ai].mean():.3f}, fpr {band[~is_ai].mean():.3f}"
            )


def fold_report(run: Path, source: str) -> None:
    """Source's fold familiarity with and without the reviewed photos, and its `ai` band."""
    bundle = load_bundle(run / "bundle")
    manifest = bundle.manifest
    splits = json.loads((run / "splits.json").read_text())
    boosted = set(manifest.training["settings"]["boosted_sources"])
    folds = load_held_out(run)
    fold = next(f for f in folds if f.source == source)
    vectors = RunEmbeddings(run)
    train, val = without_source(splits, source)
    reviewed = [p for p in train + val if source_of(p) in boosted]
    held = vectors.of(fold.paths)
    config = Settings().abstention
    plain, threshold = fit_familiarity(vectors.of(train), vectors.of(val), config)
    widened, widened_threshold = fit_familiarity(
        vectors.of(train), vectors.of(val), config, vectors.of(reviewed)
    )
    before = plain.ratios(held, threshold) <= 1
    after = widened.ratios(held, widened_threshold) <= 1
    fitted = fitted_without(folds, source, manifest, Settings())
    p_ai = softmax(fold.logits, fitted["temperature"])[:, manifest.labels.index(manifest.ai_label)]
    in_band = p_ai >= fitted["bands"]["ai_from"]
    real = np.asarray(fold.labels) == Settings().data.real_label
    newly = after & ~before
    print(
        f"{source}'s fold: stored flags match the rule: {np.array_equal(~after, fold.unfamiliar)}"
    )
    print(f"  real photos newly familiar: {int((newly & real).sum())} of {int(real.sum())}")
    print(
        f"  real photos in the fold's 'ai' band: {int((in_band & real & after).sum())} with the "
        f"reviewed photos, {int((in_band & real & before).sum())} without, "
        f"{int((in_band & real & newly).sum())} newly let in"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("source")
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--draw", type=int, default=0)
    parser.add_argument("--fold", help="A held-out source whose fold to examine.")
    args = parser.parse_args()
    bands_report(args.run, test_part(args.source, args.k, args.draw))
    if args.fold:
        fold_report(args.run, args.fold)


if __name__ == "__main__":
    main()
