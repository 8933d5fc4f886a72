"""Leave one source out: for each source, a detector fitted without it, scored on all of it.

The fold's detector is fitted exactly as the final one (same backbone, same settings) on the
train and validation splits of the other sources; the held-out source's every image is then
scored, and checked against the fold's own familiarity reference, as serving would check it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.evaluation.by_source import HeldOutSource
from ai_photo_detector.model.familiarity import fit_familiarity
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
    abstain = settings.abstention
    folds = []
    for source in sources:
        train = [s for s in splits["train"] if s.source != source]
        val = [s for s in splits["val"] if s.source != source]
        if {s.label for s in train} != set(labels) or {s.label for s in val} != set(labels):
            log(f"leave-one-source-out: {source} skipped, the other sources lack a label")
            continue
        held = sorted((s for s in everything if s.source == source), key=lambda s: str(s.path))
        fitted = backbone.fit(train, val)
        outputs = backbone.outputs(fitted, held)
        reference, threshold = fit_familiarity(
            backbone.outputs(fitted, train).embeddings,
            backbone.outputs(fitted, val).embeddings,
            abstain,
        )
        ratio = reference.distances(outputs.embeddings) / np.float32(threshold)
        unfamiliar = ratio > 1 if abstain.enabled else np.zeros(len(held), bool)
        folds.append(
            HeldOutSource(
                source=source,
                labels=[s.label for s in held],
                logits=outputs.logits,
                unfamiliar=unfamiliar,
                paths=[str(s.path) for s in held],
                distance_ratio=np.asarray(ratio, np.float32),
            )
        )
        log(f"leave-one-source-out: {source} held out ({len(held)} images) done")
    return folds
