"""Training augmentations, applied to every class alike between decode and model input.

The JPEG re-encode at a random quality, the random downscale and the blur exist to erase the
format shortcuts of the training folders (for example real shoes saved at JPEG 95 and AI shoes
at JPEG 90): after them, quantisation tables and file size carry no label information.
"""

from __future__ import annotations

import random

from PIL import Image

from ai_photo_detector.degrade import downscale, gaussian_blur, jpeg_reencode
from ai_photo_detector.settings import AugmentSettings


def random_crop(image: Image.Image, rng: random.Random, scale_min: float) -> Image.Image:
    width, height = image.size
    area = rng.uniform(scale_min, 1.0) * width * height
    ratio = rng.uniform(3 / 4, 4 / 3)
    crop_w = min(width, max(8, round((area * ratio) ** 0.5)))
    crop_h = min(height, max(8, round((area / ratio) ** 0.5)))
    left = rng.randint(0, width - crop_w)
    top = rng.randint(0, height - crop_h)
    return image.crop((left, top, left + crop_w, top + crop_h))


def augment(image: Image.Image, settings: AugmentSettings, rng: random.Random) -> Image.Image:
    """One random, label-independent degradation chain."""
    image = random_crop(image, rng, settings.crop_scale_min)
    if rng.random() < settings.flip_probability:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < settings.downscale_probability:
        image = downscale(image, rng.uniform(settings.downscale_min, 1.0))
    if rng.random() < settings.blur_probability:
        image = gaussian_blur(image, rng.uniform(0.1, settings.blur_sigma_max))
    if rng.random() < settings.jpeg_probability:
        image = jpeg_reencode(
            image, rng.randint(settings.jpeg_quality_min, settings.jpeg_quality_max)
        )
    return image
