"""Provenance evidence read from an image's metadata, beside the model's verdict.

What generators and cameras write into the file: IPTC ``digitalSourceType`` in XMP (for
example ``trainedAlgorithmicMedia``), EXIF ``Software``, ``Make`` and ``Model``, and the text
chunks Stable Diffusion web UIs (``parameters``) and ComfyUI (``prompt``, ``workflow``) put in
PNGs. None of it is signed: present, it is strong evidence worth showing a reviewer; absent, it
proves nothing (metadata is easily stripped or forged), so it never changes the verdict. The
one signed kind, C2PA Content Credentials, is read from the file's bytes by
:mod:`ai_photo_detector.evidence.c2pa` and reported here under ``c2pa``.

Read from what Pillow already parsed while opening the image, bounded: at most
``SCAN_BYTES`` of XMP are searched, with a regular expression (no XML parser to feed hostile
entities), and text values are cut to ``TEXT_CHARS``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from ai_photo_detector.evidence.c2pa import AI_SOURCE_TYPES, C2paEvidence, C2paOptions, read_c2pa

SCAN_BYTES = 64 * 1024
TEXT_CHARS = 200
_SOURCE_TYPE = re.compile(
    rb"DigitalSourceType(?:\s*=\s*[\"']|>)\s*(?:https?://cv\.iptc\.org/newscodes/"
    rb"digitalsourcetype/)?([A-Za-z]{1,64})"
)
_EXIF_SOFTWARE, _EXIF_MAKE, _EXIF_MODEL = 0x0131, 0x010F, 0x0110
# Names generators leave in Software or in their own text chunks, lower case.
GENERATORS = (
    ("midjourney", "Midjourney"),
    ("dall-e", "DALL-E"),
    ("dall·e", "DALL-E"),
    ("gpt-4o", "GPT-image"),
    ("gpt-image", "GPT-image"),
    ("openai", "OpenAI"),
    ("firefly", "Adobe Firefly"),
    ("stable diffusion", "Stable Diffusion"),
    ("comfyui", "ComfyUI"),
    ("novelai", "NovelAI"),
    ("imagen", "Google Imagen"),
    ("flux", "FLUX"),
    ("leonardo", "Leonardo.Ai"),
    ("ideogram", "Ideogram"),
)
_PNG_KEYS = ("parameters", "prompt", "workflow", "Software", "Description", "Comment")


@dataclass
class Provenance:
    """What the file says about where it came from (every field empty when it says nothing)."""

    digital_source_type: str | None = None  # IPTC code from XMP
    ai_declared: bool = False  # the metadata itself says generative AI made it
    generator: str | None = None  # a recognised generator, from any of the fields below
    software: str | None = None  # EXIF Software (or a PNG Software chunk)
    camera: str | None = None  # EXIF Make and Model
    text_chunks: list[str] = field(default_factory=list)  # PNG text keys found (not values)
    c2pa: C2paEvidence | None = None  # signed Content Credentials, when the file embeds them

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value[:TEXT_CHARS].decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    cleaned = value.replace("\x00", "").strip()[:TEXT_CHARS]
    return cleaned or None


def _xmp(image: Image.Image) -> bytes:
    raw = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="replace")
    return bytes(raw[:SCAN_BYTES]) if isinstance(raw, bytes | bytearray) else b""


def _recognise(*texts: str | None) -> str | None:
    for text in texts:
        if not text:
            continue
        lowered = text.lower()
        for needle, name in GENERATORS:
            if needle in lowered:
                return name
    return None


def read_provenance(
    image: Image.Image, data: bytes | None = None, c2pa: C2paOptions | None = None
) -> Provenance:
    """The evidence in an opened (not necessarily loaded) image, and with ``data`` (its
    bytes) and ``c2pa`` options, its Content Credentials; never raises for bad metadata: what
    cannot be read is simply absent (or, for C2PA, said in its ``error``)."""
    found = Provenance()
    if data is not None and c2pa is not None:
        found.c2pa = read_c2pa(data, c2pa)
    match = _SOURCE_TYPE.search(_xmp(image))
    if match:
        found.digital_source_type = match.group(1).decode("ascii")
        found.ai_declared = found.digital_source_type in AI_SOURCE_TYPES
    exif: dict[int, Any]
    try:
        with warnings.catch_warnings():  # Pillow warns of corrupt EXIF: here it is just absent
            warnings.simplefilter("ignore")
            exif = dict(image.getexif())
    except Exception:  # a malformed EXIF block is no evidence either way
        exif = {}
    found.software = _text(exif.get(_EXIF_SOFTWARE))
    make, model = _text(exif.get(_EXIF_MAKE)), _text(exif.get(_EXIF_MODEL))
    found.camera = " ".join(part for part in (make, model) if part) or None
    chunks = {key: image.info[key] for key in _PNG_KEYS if key in image.info}
    found.text_chunks = sorted(chunks)
    found.software = found.software or _text(chunks.get("Software"))
    if "parameters" in chunks:  # AUTOMATIC1111 / Forge write their settings here
        generator: str | None = "Stable Diffusion"
    elif "workflow" in chunks or "prompt" in chunks:
        generator = "ComfyUI"
    else:
        generator = None
    found.generator = generator or _recognise(
        found.software, _text(chunks.get("Description")), _text(chunks.get("Comment"))
    )
    if found.generator is not None and found.digital_source_type is None:
        found.ai_declared = True  # a generator named itself
    return found
