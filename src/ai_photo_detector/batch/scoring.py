"""Score a list of items with a detector: the shared core of job workers and ``score``.

Each image gets a row with the same fields as ``/v1/predict`` (flattened), or an error row with
a stable code; one bad image never fails the others. Graphs whose answer for an image depends
on its batch (dynamically quantised ones) run one image at a time, so a job's verdicts match
the service's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ai_photo_detector.errors import DetectorError
from ai_photo_detector.imaging import DecodeLimits, decode_image, model_view, normalise
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.persistence.jobs import Item

RESULT_FIELDS = (
    "item",
    "name",
    "label",
    "band",
    "probability",
    "scores",
    "reasons",
    "model_name",
    "model_version",
    "width",
    "height",
    "format",
    "bytes",
    "sha256",
    "error_code",
    "error_message",
)


def error_row(item: Item, code: str, message: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(RESULT_FIELDS)
    row.update(item=item.number, name=item.name, reasons="", error_code=code)
    row["error_message"] = message[:1000]
    return row


def score_items(
    detector: OnnxDetector,
    items: Sequence[Item],
    read: Callable[[Item], bytes],
    limits: DecodeLimits,
    batch_size: int = 8,
    on_batch: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per item, in item order. ``on_batch`` runs after each inference (a worker
    renews its lease there)."""
    spec = detector.manifest.preprocessing
    manifest = detector.manifest
    rows: dict[int, dict[str, Any]] = {}
    pending: list[tuple[Item, np.ndarray, Any]] = []
    step = batch_size if detector.batch_independent else 1

    def infer() -> None:
        if not pending:
            return
        output = detector.run(np.stack([array for _, array, _ in pending]))
        found = detector.verdicts(output, [info.provenance for _, _, info in pending])
        for (item, _, info), verdict in zip(pending, found, strict=True):
            rows[item.number] = {
                "item": item.number,
                "name": item.name,
                "label": verdict.label,
                "band": verdict.band,
                "probability": round(verdict.probability, 6),
                "scores": {k: round(v, 6) for k, v in verdict.scores.items()},
                "reasons": ",".join(verdict.reasons),
                "model_name": manifest.name,
                "model_version": manifest.version,
                "width": info.width,
                "height": info.height,
                "format": info.format,
                "bytes": info.bytes,
                "sha256": info.sha256,
                "error_code": None,
                "error_message": None,
            }
        pending.clear()
        if on_batch is not None:
            on_batch()

    for item in items:
        try:
            decoded = decode_image(read(item), spec, limits)
        except DetectorError as exc:
            rows[item.number] = error_row(item, exc.code, exc.message)
            continue
        except OSError as exc:
            rows[item.number] = error_row(item, "unreadable", str(exc))
            continue
        array = normalise(model_view(decoded.image, spec), spec)
        pending.append((item, array, decoded.info))
        if len(pending) >= step:
            infer()
    infer()
    return [rows[item.number] for item in items]
