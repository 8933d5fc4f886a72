"""Decode + preprocess of a 3 MP JPEG: the shared path (DCT-domain draft) vs naive full decode.

Target: >= 2.5x faster than a full decode followed by a resize.
Run: .venv/bin/python -m benchmarks.decode
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ai_photo_detector.imaging import PreprocessSpec, preprocess_bytes
from benchmarks.common import best_rates, print_table, write_csv
from benchmarks.photos import sample_photo


def naive(data: bytes, size: int) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5
    return array.transpose(2, 0, 1)


def main() -> None:
    rows = []
    spec = PreprocessSpec(input_size=224)
    for width, height in ((2048, 1536), (1024, 1024)):
        data = sample_photo(width, height)
        rates = best_rates(
            {
                "naive": lambda data=data: naive(data, 224),
                "shared": lambda data=data: preprocess_bytes(data, spec),
            },
            1,
        )
        naive_rate, shared_rate = rates["naive"], rates["shared"]
        rows.append(
            {
                "image": f"{width}x{height} JPEG q90",
                "naive_images_per_s": naive_rate,
                "shared_path_images_per_s": shared_rate,
                "speedup": shared_rate / naive_rate,
            }
        )
    print_table(rows)
    print("written", write_csv("decode", rows))


if __name__ == "__main__":
    main()
