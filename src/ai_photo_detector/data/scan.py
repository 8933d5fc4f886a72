"""Read every image once: decodability, size, metadata and hashes for validation and splits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import imagehash
from PIL import Image

from ai_photo_detector.data.discovery import Sample
from ai_photo_detector.imaging import (
    DecodeLimits,
    ImageError,
    PreprocessSpec,
    canonical_view_bytes,
    decode_image,
)


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
    # The model's view as training sees it (resized, re-encoded), for the processed audit.
    view: ScannedImage | None = None


# Full-resolution decode (no DCT draft) so truncation anywhere in the file is caught.
_SCAN_SPEC = PreprocessSpec(jpeg_draft=False)


def processed_view(sample: Sample, data: bytes, spec: PreprocessSpec) -> ScannedImage:
    """Metadata of the file training effectively learns from: the canonical model view."""
    view = canonical_view_bytes(decode_image(data, spec).image, spec)
    return ScannedImage(
        sample,
        ok=True,
        width=spec.input_size,
        height=spec.input_size,
        format="JPEG",
        bytes=len(view),
        jpeg_quality=spec.canonical_jpeg_quality or 95,
    )


def scan_one(sample: Sample, view_spec: PreprocessSpec | None = None) -> ScannedImage:
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
        view=processed_view(sample, data, view_spec) if view_spec is not None else None,
    )


def scan(
    samples: Iterable[Sample],
    threads: int = 2,
    on_progress: Callable[[], None] | None = None,
    view_spec: PreprocessSpec | None = None,
) -> list[ScannedImage]:
    """Scan every sample; with ``view_spec``, also the metadata of its processed model view."""
    results = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for result in pool.map(lambda sample: scan_one(sample, view_spec), samples):
            results.append(result)
            if on_progress is not None:
                on_progress()
    return results
