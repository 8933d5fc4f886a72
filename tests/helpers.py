"""Images and datasets the tests build themselves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A 'camera-like' image: smooth colour gradients with mild noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack(
        [
            rng.uniform(0.2, 0.8)
            + 0.3 * np.sin(2 * np.pi * (x * rng.uniform(0.3, 1) + rng.uniform())),
            rng.uniform(0.2, 0.8)
            + 0.3 * np.cos(2 * np.pi * (y * rng.uniform(0.3, 1) + rng.uniform())),
            rng.uniform(0.2, 0.8) + 0.2 * (x - y),
        ],
        axis=-1,
    )
    base += rng.normal(0, 0.02, base.shape)
    return Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))


def patterned_image(rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A 'generated-looking' image: hard-edged stripes and blocks in saturated colours."""
    period = int(rng.integers(4, 12))
    y, x = np.mgrid[0:size, 0:size]
    stripes = ((x + y * int(rng.integers(0, 3))) // period) % 2
    colours = rng.uniform(0, 1, (2, 3))
    array = colours[stripes]
    return Image.fromarray((array * 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def build_dataset(
    root: Path,
    per_class: int = 24,
    seed: int = 0,
    real_quality: int = 95,
    ai_quality: int = 90,
    extra_labels: tuple[str, ...] = (),
) -> Path:
    """A small separable dataset with one sub-folder per label."""
    rng = np.random.default_rng(seed)
    makers = {"real": smooth_image, "ai": patterned_image}
    for label, quality in (("real", real_quality), ("ai", ai_quality)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{label}_{i:03d}.jpg").write_bytes(
                encode(makers[label](rng), "JPEG", quality=quality)
            )
    for label in extra_labels:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mixed = Image.blend(smooth_image(rng), patterned_image(rng), 0.5)
            (folder / f"{label}_{i:03d}.jpg").write_bytes(encode(mixed, "JPEG", quality=93))
    return root


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    """An ASGI HTTP scope for a POST to ``path``, for tests that drive the app message by
    message (a client leaving mid-upload, a body trickling in)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
