"""Batch prediction over files for the command line, through the shared preprocessing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ai_photo_detector.c2pa_evidence import C2paOptions, load_trust_anchors
from ai_photo_detector.imaging import DecodeLimits, ImageError, preprocess_bytes
from ai_photo_detector.inference import OnnxDetector
from ai_photo_detector.provenance import Provenance
from ai_photo_detector.settings import Settings


def c2pa_options(settings: Settings) -> C2paOptions | None:
    """How Content Credentials are read when scoring (None: not at all); reads the trust
    anchor file, so a wrong path fails here, at start-up."""
    provenance = settings.provenance
    if not provenance.c2pa:
        return None
    return C2paOptions(
        max_file_bytes=provenance.c2pa_max_file_bytes,
        max_manifest_bytes=provenance.c2pa_max_manifest_bytes,
        trust_anchors=load_trust_anchors(provenance.trust_anchors),
        trusted_ai_decides=provenance.trusted_ai_decides,
    )


def file_limits(settings: Settings) -> DecodeLimits:
    """Decode limits for local files named by an operator (size limits, no markup scan)."""
    return DecodeLimits(
        max_pixels=settings.imaging.max_pixels,
        min_side=settings.imaging.min_side,
        max_side=settings.imaging.max_side,
        c2pa=c2pa_options(settings),
    )


def upload_limits(settings: Settings) -> DecodeLimits:
    """Decode limits for images a client sent (accepted formats only, polyglots refused)."""
    imaging = settings.imaging
    return DecodeLimits(
        max_pixels=imaging.max_pixels,
        min_side=imaging.min_side,
        max_side=imaging.max_side,
        accepted_formats=frozenset(settings.server.accepted_formats),
        reject_markup=True,
        c2pa=c2pa_options(settings),
    )


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
