"""Image degradations shared by training augmentation and the robustness evaluation."""

from __future__ import annotations

import io
import re

from PIL import Image, ImageFilter


def jpeg_reencode(image: Image.Image, quality: int) -> Image.Image:
    return Image.open(io.BytesIO(encode(image, "JPEG", quality))).convert("RGB")


def downscale(image: Image.Image, factor: float) -> Image.Image:
    width, height = image.size
    size = (max(8, round(width * factor)), max(8, round(height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR)


def gaussian_blur(image: Image.Image, sigma: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=sigma))


def encode(image: Image.Image, image_format: str, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format=image_format)
    return buffer.getvalue()


_CONDITION = re.compile(r"^(jpeg|downscale|blur)([0-9.]+)$")


def apply_condition(data: bytes, condition: str) -> bytes:
    """Re-encode the original file under a named condition: jpegQ, downscaleF or blurS.

    The result is a new file that then goes through the normal inference path, exactly as a
    re-compressed or resized upload would.
    """
    match = _CONDITION.match(condition)
    if match is None:
        raise ValueError(f"unknown robustness condition {condition!r} (jpegQ, downscaleF, blurS)")
    kind, value = match.group(1), float(match.group(2))
    with Image.open(io.BytesIO(data)) as original:
        image = original.convert("RGB")
    if kind == "jpeg":
        return encode(image, "JPEG", int(value))
    if kind == "downscale":
        return encode(downscale(image, value), "PNG")
    return encode(gaussian_blur(image, value), "PNG")
