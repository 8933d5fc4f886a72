"""Batch prediction over files for the command line, through the shared preprocessing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ai_photo_detector.evidence.provenance import Provenance
from ai_photo_detector.imaging import ImageError, file_limits, preprocess_bytes
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.settings import Settings


def predict_files(
    detector: OnnxDetector, paths: Iterable[Path], settings: Settings
) -> Iterator[dict[str, Any]]:
    """One result dict per path, in order: a verdict, or ``{"path", "error": {code, message}}``."""
    spec = detector.manifest.preprocessing
    limits = file_limits(settings)
    pending: list[tuple[Path, np.ndarray, Provenance | None]] = []

    def flush() -> Iterator[dict[str, Any]]:
        if not pending:
            return
        batch = np.stack([array for _, array, _ in pending])
        verdicts = detector.verdicts(detector.run(batch), [found for _, _, found in pending])
        for (path, _, provenance), verdict in zip(pending, verdicts, strict=True):
            yield {
                "path": str(path),
                "label": verdict.label,
                "band": verdict.band,
                "probability": round(verdict.probability, 6),
                "scores": {k: round(v, 6) for k, v in verdict.scores.items()},
                "reasons": list(verdict.reasons),
                "evidence": {"provenance": provenance.as_dict() if provenance else None},
            }
        pending.clear()

    for path in paths:
        try:
            array, decoded = preprocess_bytes(path.read_bytes(), spec, limits)
        except ImageError as exc:
            yield from flush()
            yield {"path": str(path), "error": {"code": exc.code, "message": exc.message}}
            continue
        except OSError as exc:
            yield from flush()
            yield {"path": str(path), "error": {"code": "unreadable", "message": str(exc)}}
            continue
        pending.append((path, array, decoded.info.provenance))
        if len(pending) >= settings.inference.batch_size:
            yield from flush()
    yield from flush()
