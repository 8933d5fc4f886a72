"""The per-image drift statistics against their textbook definitions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ai_photo_detector.image_stats import STAT_NAMES, image_statistics
from ai_photo_detector.imaging import PreprocessSpec, model_view
from helpers import smooth_image


def _reference(image: Image.Image) -> dict[str, float]:
    """The definitions, written plainly on a 0-1 float image (HSV saturation, 4-neighbour
    Laplacian variance for sharpness, Rec. 601 luma for brightness and contrast)."""
    rgb = np.asarray(image, dtype=np.float64) / 255.0
    gray = rgb @ np.asarray([0.299, 0.587, 0.114])
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.where(high > 0, (high - low) / np.where(high > 0, high, 1.0), 0.0)
    laplacian = (
        gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    )
    return {
        "brightness": float(gray.mean()),
        "contrast": float(gray.std()),
        "saturation": float(saturation.mean()),
        "sharpness": float(laplacian.var()),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_statistics_match_their_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = smooth_image(rng, 200)
    pixels = np.asarray(image).copy()
    pixels[:20, :20] = 0  # black pixels: saturation defined as 0 there
    image = Image.fromarray(pixels)
    stats = image_statistics(image, 87)
    assert set(stats) == set(STAT_NAMES)
    assert stats["jpeg_quality"] == 87
    for name, expected in _reference(image).items():
        assert stats[name] == pytest.approx(expected, rel=1e-5, abs=1e-7), name


def test_statistics_are_measured_on_the_model_view() -> None:
    """Training and serving both measure the view the model sees (resized centre crop): the
    statistics of a large photo are those of its view, not of the full image."""
    image = smooth_image(np.random.default_rng(3), 1000)
    spec = PreprocessSpec(input_size=224)
    view = model_view(image, spec)
    assert view.size == (224, 224)
    stats = image_statistics(view, None)
    assert stats["jpeg_quality"] == -1
    for name, expected in _reference(view).items():
        assert stats[name] == pytest.approx(expected, rel=1e-5, abs=1e-7), name
    # Sharpness depends on the scale it is measured at: why bundles record the basis.
    assert image_statistics(image, None)["sharpness"] != pytest.approx(stats["sharpness"])
