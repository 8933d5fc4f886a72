"""Every shipped bundle gives a photo the same probability alone and inside a micro-batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ai_photo_detector.imaging import preprocess_bytes
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import OnnxDetector, calibrated_probabilities
from ai_photo_detector.serving.engine import MicroBatcher
from helpers import encode, patterned_image, smooth_image

SHIPPED = sorted(
    p.parent for p in (Path(__file__).resolve().parents[1] / "models").glob("*/manifest.json")
)


def _photos(spec_size: int, count: int) -> list[bytes]:
    rng = np.random.default_rng(3)
    makers = (smooth_image, patterned_image)
    return [encode(makers[i % 2](rng, 96 + 8 * i), "JPEG", quality=85 + i) for i in range(count)]


@pytest.mark.parametrize("bundle_path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_probability_is_the_same_alone_and_in_a_batch_of_nine(bundle_path: Path) -> None:
    detector = OnnxDetector(load_bundle(bundle_path))
    spec = detector.manifest.preprocessing
    arrays = np.stack([preprocess_bytes(data, spec)[0] for data in _photos(spec.input_size, 9)])
    alone = calibrated_probabilities(detector.run(arrays[:1]).logits, detector.manifest)
    batched = calibrated_probabilities(detector.run(arrays).logits, detector.manifest)
    assert np.abs(alone[0] - batched[0]).max() <= 1e-5


@pytest.mark.parametrize("bundle_path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_micro_batcher_answers_as_a_lone_run(bundle_path: Path) -> None:
    """Through the service's engine: nine images submitted together form one micro-batch, and
    each answer equals that image run alone."""
    detector = OnnxDetector(load_bundle(bundle_path))
    spec = detector.manifest.preprocessing
    arrays = [preprocess_bytes(data, spec)[0] for data in _photos(spec.input_size, 9)]

    async def together() -> list[np.ndarray]:
        batcher = MicroBatcher(detector, max_batch_size=9, max_delay_s=0.5, max_queue=16)
        tickets = [batcher.admit() for _ in arrays]
        batcher.start()
        try:
            results = await asyncio.gather(
                *(batcher.submit(a, t) for a, t in zip(arrays, tickets, strict=True))
            )
        finally:
            await batcher.stop()
        assert {r.batch_size for r in results} == {9}
        return [r.logits for r in results]

    for array, logits in zip(arrays, asyncio.run(together()), strict=True):
        alone = detector.run(array[None]).logits[0]
        assert (
            np.abs(
                calibrated_probabilities(alone[None], detector.manifest)
                - calibrated_probabilities(logits[None], detector.manifest)
            ).max()
            <= 1e-5
        )
