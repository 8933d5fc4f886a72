"""Realistic test photos for the benchmarks, made from scikit-image's sample photographs."""

from __future__ import annotations

import io

from PIL import Image


def sample_photo(width: int, height: int, index: int = 0, quality: int = 90) -> bytes:
    """A real photograph (scikit-image sample), resized to width x height, as a JPEG."""
    from skimage import data

    sources = [data.chelsea, data.astronaut, data.coffee, data.rocket]
    image = Image.fromarray(sources[index % len(sources)]()).convert("RGB")
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
