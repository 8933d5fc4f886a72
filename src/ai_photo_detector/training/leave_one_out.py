"""Leave one source out: for each source, a detector fitted without it, scored on all of it.

The fold's detector is fitted exactly as the final one (same backbone, same settings) on the
train and validation splits of the other sources; the held-out source's every image is then
scored, and checked against the fold's own familiarity reference, as serving would check it.

A boosted source (reviewed feedback, ``training.boosted_sources``) is the exception: the final
detector learns from it on purpose, so its photos are scored the way the final detector will
meet more of their kind, cross-fitted: in ``calibration.cross_fit_folds`` parts, each scored by
a detector fitted on everything else, the rest of that source included. The bands fitted on
these scores then follow what the reviews taught, and no photo is scored by a head that saw it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.evaluation.by_source import HeldOutSource
from ai_photo_detector.model.familiarity import fit_familiarity
from ai_photo_detector.model.reviewed_kind import ReviewedKind, fit_reviewed_kind
from ai_photo_detector.settings import Settings
from ai_photo_detector.training.backbones import Backbone


def leave_one_source_out(
    backbone: Backbone,
    splits: dict[str, list[Sample]],
    labels: list[str],
    settings: Settings,
    log: Callable[[str], None] = print,
) -> list[HeldOutSource]:
    """One :class:`HeldOutSource` per source whose absence leaves every label to train on."""
    everything = [s for split in splits.values() for s in split]
    sources = sorted({s.source for s in everything})
    if len(sources) < 2 or not settings.evaluation.leave_one_source_out:
        return []
    boosted = set(settings.training.boosted_sources) if backbone.refits_cheaply else set()
    folds = []
    for source in sources:
        held = sorted((s for s in everything if s.source == source), key=lambda s: str(s.path))
        cross_fitted = source in boosted
        parts = _parts(held, settings.calibration.cross_fit_folds) if cross_fitted else [held]
        scored = [_score_part(backbone, splits, labels, settings, part) for part in parts]
        if any(part is None for part in scored):
            log(f"leave-one-source-out: {source} skipped, the other sources lack a label")
            continue
        done = [part for part in scored if part is not None]
        order = np.argsort([str(s.path) for part in parts for s in part], kind="stable")
        folds.append(
            HeldOutSource(
                source=source,
                labels=[s.label for part in parts for s in part],
                logits=np.concatenate([p.logits for p in done]),
                unfamiliar=np.concatenate([p.unfamiliar for p in done]),
                paths=[str(s.path) for part in parts for s in part],
                distance_ratio=np.concatenate([p.ratio for p in done]),
                cross_fitted=cross_fitted,
                reviewed_kind=_kind_flags(done),
            ).reordered(order)
        )
        how = f"cross-fitted in {len(parts)} parts" if cross_fitted else "held out"
        log(f"leave-one-source-out: {source} {how} ({len(held)} images) done")
    return folds


@dataclass
class _Scored:
    logits: NDArray[np.float32]
    unfamiliar: NDArray[np.bool_]
    ratio: NDArray[np.float32]
    reviewed_kind: NDArray[np.bool_] | None  # None: the fold tells no reviewed kind apart


def _kind_flags(scored: list[_Scored]) -> NDArray[np.bool_] | None:
    """The parts' reviewed-kind flags joined; None when no part's detector had a kind."""
    if all(part.reviewed_kind is None for part in scored):
        return None
    return np.concatenate(
        [
            np.zeros(len(part.logits), bool) if part.reviewed_kind is None else part.reviewed_kind
            for part in scored
        ]
    )


def reviewed_mask(samples: list[Sample], settings: Settings) -> NDArray[np.bool_]:
    """Which of ``samples`` are of boosted sources (reviewed feedback): they widen what counts
    as familiar and teach the reviewed kind."""
    boosted = set(settings.training.boosted_sources)
    return np.asarray([s.source in boosted for s in samples], bool)


def reviewed_kind_of(
    embeddings: NDArray[np.float32], reviewed: NDArray[np.bool_], settings: Settings
) -> ReviewedKind | None:
    """The kind the ``reviewed`` photos (a mask over ``embeddings``, a detector's training and
    validation images) teach, told apart from the rest of them; None where the reviewed band
    is off or too few photos were reviewed."""
    if settings.calibration.reviewed_ai_band_fpr is None:
        return None
    return fit_reviewed_kind(
        embeddings[~reviewed], embeddings[reviewed], settings.calibration.reviewed_kind_quantile
    )


def _parts(held: list[Sample], count: int) -> list[list[Sample]]:
    """``held`` in ``count`` parts, each label spread evenly over them (deterministic)."""
    parts: list[list[Sample]] = [[] for _ in range(max(1, min(count, len(held))))]
    for label in sorted({s.label for s in held}):
        for i, sample in enumerate(s for s in held if s.label == label):
            parts[i % len(parts)].append(sample)
    return [part for part in parts if part]


def _score_part(
    backbone: Backbone,
    splits: dict[str, list[Sample]],
    labels: list[str],
    settings: Settings,
    part: list[Sample],
) -> _Scored | None:
    """``part`` scored by a detector fitted on the train and validation images not in it."""
    leave = {s.path for s in part}
    train = [s for s in splits["train"] if s.path not in leave]
    val = [s for s in splits["val"] if s.path not in leave]
    if {s.label for s in train} != set(labels) or {s.label for s in val} != set(labels):
        return None
    abstain = settings.abstention
    fitted = backbone.fit(train, val)
    outputs = backbone.outputs(fitted, part)
    train_embeddings = backbone.outputs(fitted, train).embeddings
    val_embeddings = backbone.outputs(fitted, val).embeddings
    seen = np.concatenate([train_embeddings, val_embeddings])
    reviewed = reviewed_mask(train + val, settings)
    reference, threshold = fit_familiarity(
        train_embeddings, val_embeddings, abstain, seen[reviewed] if reviewed.any() else None
    )
    ratio = reference.ratios(outputs.embeddings, threshold)
    unfamiliar = ratio > 1 if abstain.enabled else np.zeros(len(part), bool)
    kind = reviewed_kind_of(seen, reviewed, settings)
    of_kind = kind.flags(outputs.embeddings) if kind is not None else None
    return _Scored(outputs.logits, unfamiliar, np.asarray(ratio, np.float32), of_kind)
