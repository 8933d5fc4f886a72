"""Read every image once: decodability, size, metadata and hashes for validation and splits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import imagehash
from PIL import Image

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.imaging import DecodeLimits, ImageError, PreprocessSpec, decode_image


@dataclass
class ScannedImage:
    sample: Sample
    ok: bool
    error_code: str = ""
    error: str = ""
    sha256: str = ""
    phash: int = 0
    width: int = 0
    height: int = 0
    format: str = ""
    bytes: int = 0
    jpeg_quality: int | None = None
    has_exif: bool = False


# Full-resolution decode (no DCT draft) so truncation anywhere in the file is caught.
_SCAN_SPEC = PreprocessSpec(jpeg_draft=False)


def scan_one(sample: Sample) -> ScannedImage:
    try:
        data = sample.path.read_bytes()
    except OSError as exc:
        return ScannedImage(sample, ok=False, error_code="unreadable", error=str(exc))
    try:
        decoded = decode_image(data, _SCAN_SPEC, DecodeLimits())
    except ImageError as exc:
        return ScannedImage(
            sample,
            ok=False,
            error_code=exc.code,
            error=exc.message,
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
        )
    info = decoded.info
    thumb = decoded.image.copy()
    thumb.thumbnail((256, 256), Image.Resampling.BILINEAR)
    return ScannedImage(
        sample,
        ok=True,
        sha256=info.sha256,
        phash=int(str(imagehash.phash(thumb)), 16),
        width=info.width,
        height=info.height,
        format=info.format,
        bytes=info.bytes,
        jpeg_quality=info.jpeg_quality,
        has_exif=info.has_exif,
    )


def scan(
    samples: Iterable[Sample],
    threads: int = 2,
    on_progress: Callable[[], None] | None = None,
) -> list[ScannedImage]:
    results = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for result in pool.map(scan_one, samples):
            results.append(result)
            if on_progress is not None:
                on_progress()
    return results
