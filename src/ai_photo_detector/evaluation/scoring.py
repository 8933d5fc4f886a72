"""Run a bundle over many labelled files: the engine of evaluation and calibration.

Decoding runs in a thread pool (Pillow releases the GIL) and inference in batches, through the
very same decode, model view and normalisation the service uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.degrade import apply_condition
from ai_photo_detector.image_stats import STAT_NAMES, image_statistics
from ai_photo_detector.imaging import (
    ImageError,
    PreprocessSpec,
    decode_image,
    model_view,
    normalise,
)
from ai_photo_detector.model.inference import OnnxDetector


@dataclass
class Prepared:
    index: int
    array: NDArray[np.float32] | None
    stats: dict[str, float] | None
    error: str = ""


@dataclass
class ScoredSet:
    samples: list[Sample]
    logits: NDArray[np.float32]
    embeddings: NDArray[np.float32]
    stats: dict[str, NDArray[np.float64]]
    errors: dict[Path, str] = field(default_factory=dict)

    def targets(self, labels: list[str]) -> NDArray[np.int64]:
        index = {label: i for i, label in enumerate(labels)}
        return np.asarray([index[s.label] for s in self.samples], dtype=np.int64)


def _prepare(
    index: int, sample: Sample, spec: PreprocessSpec, condition: str | None, with_stats: bool
) -> Prepared:
    try:
        data = sample.path.read_bytes()
        if condition:
            data = apply_condition(data, condition)
        decoded = decode_image(data, spec)
    except (ImageError, OSError, ValueError) as exc:
        return Prepared(index, None, None, getattr(exc, "message", str(exc)))
    view = model_view(decoded.image, spec)
    stats = image_statistics(view, decoded.info.jpeg_quality) if with_stats else None
    return Prepared(index, normalise(view, spec), stats)


def _chunks(items: Sequence[Sample], size: int) -> Iterator[list[tuple[int, Sample]]]:
    for start in range(0, len(items), size):
        yield list(enumerate(items[start : start + size], start))


def score_samples(
    detector: OnnxDetector,
    samples: Sequence[Sample],
    *,
    condition: str | None = None,
    batch_size: int = 32,
    threads: int = 2,
    with_stats: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ScoredSet:
    """Logits and embeddings of every decodable sample; undecodable ones go to ``errors``."""
    spec = detector.manifest.preprocessing
    kept: list[Sample] = []
    logits: list[NDArray[np.float32]] = []
    embeddings: list[NDArray[np.float32]] = []
    stats: dict[str, list[float]] = {name: [] for name in STAT_NAMES}
    errors: dict[Path, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for chunk in _chunks(samples, batch_size):
            prepared = list(
                pool.map(
                    lambda item: _prepare(item[0], item[1], spec, condition, with_stats), chunk
                )
            )
            good = [p for p in prepared if p.array is not None]
            for p in prepared:
                if p.array is None:
                    errors[samples[p.index].path] = p.error
            if good:
                batch = np.stack([p.array for p in good if p.array is not None])
                output = detector.run(batch)
                logits.append(output.logits)
                embeddings.append(output.embedding)
                for p in good:
                    kept.append(samples[p.index])
                    if p.stats is not None:
                        for name in STAT_NAMES:
                            stats[name].append(p.stats[name])
            if on_progress is not None:
                on_progress(len(chunk))
    classes = len(detector.manifest.labels)
    return ScoredSet(
        samples=kept,
        logits=np.concatenate(logits) if logits else np.zeros((0, classes), np.float32),
        embeddings=np.concatenate(embeddings)
        if embeddings
        else np.zeros((0, detector.manifest.onnx.embedding_size), np.float32),
        stats={name: np.asarray(values) for name, values in stats.items()},
        errors=errors,
    )
