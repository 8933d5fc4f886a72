"""Write the fuzzer's seed corpus: small valid files of every format the decoder accepts.

Generated rather than committed, so the seeds follow Pillow's encoders and stay reviewable as
code. The serving formats (JPEG, PNG, WebP, GIF) carry the metadata the provenance reader looks
for; BMP and TIFF are the other dataset extensions; a few more Pillow formats are there because
the default limits (training, scoring, dataset scans) accept whatever Pillow can decode.

Usage: ``python fuzz/make_seeds.py [FOLDER]`` (default ``fuzz/seeds``).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin, features

# Every side at least 16 (the serving minimum), so seeds get past the size checks to the
# metadata and pixel code; small, so a mutation is cheap to run.
SIZE = (24, 18)
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
    b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/'
    b'trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta>'
)
_SOFTWARE, _MAKE, _MODEL, _ORIENTATION = 0x0131, 0x010F, 0x0110, 0x0112


def _picture(mode: str = "RGB", size: tuple[int, int] = SIZE, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    height, width = size[1], size[0]
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    noisy = np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(noisy)
    if mode == "RGBA":
        alpha = Image.fromarray((x * 255 // width).astype(np.uint8))
        image.putalpha(alpha)
        return image
    if mode in ("I;16", "I"):
        wide = (noisy[..., 0].astype(np.uint32) * 257).astype(np.uint16)
        return Image.fromarray(wide).convert(mode) if mode == "I" else Image.fromarray(wide)
    return image if mode == "RGB" else image.convert(mode)


def _exif(software: str = "Midjourney v6", orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[_SOFTWARE] = software
    exif[_MAKE] = "Canon"
    exif[_MODEL] = "EOS R5"
    if orientation is not None:
        exif[_ORIENTATION] = orientation
    return exif


def _save(image: Image.Image | list[Image.Image], fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    if isinstance(image, list):
        image[0].save(buffer, format=fmt, save_all=True, append_images=image[1:], **options)
    else:
        image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_text(*items: tuple[str, str, str]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for kind, key, value in items:
        if kind == "itxt":
            info.add_itxt(key, value)
        else:
            info.add_text(key, value, zip=kind == "ztxt")
    return info


def _frames(count: int, mode: str = "RGB") -> list[Image.Image]:
    return [_picture(mode, seed=i) for i in range(count)]


def jpeg() -> Iterator[tuple[str, bytes]]:
    rgb = _picture()
    yield "jpeg-exif-xmp.jpg", _save(rgb, "JPEG", quality=80, exif=_exif(), xmp=XMP)
    yield "jpeg-rotated.jpg", _save(rgb, "JPEG", quality=90, exif=_exif("GIMP", orientation=6))
    yield "jpeg-progressive.jpg", _save(rgb, "JPEG", quality=60, progressive=True)
    yield "jpeg-grey.jpg", _save(_picture("L"), "JPEG", quality=75)
    yield "jpeg-cmyk.jpg", _save(_picture("CMYK"), "JPEG", quality=75)
    yield "jpeg-comment.jpg", _save(rgb, "JPEG", quality=50, comment=b"made by DALL-E 3")
    # Two pictures in one JPEG (MPF), as stereo cameras and some phones write them.
    yield "jpeg-mpo.jpg", _save([rgb, _picture(seed=1)], "MPO", quality=70)


def png() -> Iterator[tuple[str, bytes]]:
    a1111 = ("text", "parameters", "a red shoe, Steps: 20, Sampler: Euler a, Seed: 1")
    comfy = ("itxt", "prompt", '{"3": {"class_type": "KSampler"}}')
    workflow = ("ztxt", "workflow", '{"nodes": [{"type": "CheckpointLoaderSimple"}]}')
    xmp = ("itxt", "XML:com.adobe.xmp", XMP.decode())
    yield "png-a1111.png", _save(_picture(), "PNG", pnginfo=_png_text(a1111))
    yield "png-comfyui.png", _save(_picture(), "PNG", pnginfo=_png_text(comfy, workflow))
    yield "png-xmp-exif.png", _save(_picture(), "PNG", pnginfo=_png_text(xmp), exif=_exif())
    software = ("text", "Software", "Adobe Firefly")
    yield "png-rgba-software.png", _save(_picture("RGBA"), "PNG", pnginfo=_png_text(software))
    palette = _picture("P")
    yield "png-palette-trns.png", _save(palette, "PNG", transparency=0)
    yield "png-grey16.png", _save(_picture("I;16"), "PNG")
    yield "png-bilevel.png", _save(_picture("1"), "PNG")
    yield "png-animated.png", _save(_frames(2), "PNG", duration=100, loop=0)


def gif() -> Iterator[tuple[str, bytes]]:
    yield "gif-single.gif", _save(_picture("P"), "GIF", comment=b"Midjourney")
    animated = [frame.convert("P") for frame in _frames(3)]
    yield "gif-animated.gif", _save(animated, "GIF", duration=80, loop=0, transparency=0)


def webp() -> Iterator[tuple[str, bytes]]:
    yield "webp-lossy-meta.webp", _save(_picture(), "WEBP", quality=70, exif=_exif(), xmp=XMP)
    yield "webp-lossless-rgba.webp", _save(_picture("RGBA"), "WEBP", lossless=True)
    yield "webp-animated.webp", _save(_frames(2), "WEBP", duration=100, loop=0, quality=50)


def bmp() -> Iterator[tuple[str, bytes]]:
    yield "bmp-rgb.bmp", _save(_picture(), "BMP")
    yield "bmp-palette.bmp", _save(_picture("P"), "BMP")
    yield "bmp-rgba.bmp", _save(_picture("RGBA"), "BMP")
    yield "bmp-bilevel.bmp", _save(_picture("1"), "BMP")


def tiff() -> Iterator[tuple[str, bytes]]:
    tags = {_SOFTWARE: "Stable Diffusion", _MAKE: "Nikon", _MODEL: "Z6", 700: XMP}
    yield "tiff-raw-tags.tif", _save(_picture(), "TIFF", tiffinfo=tags)
    yield "tiff-lzw.tif", _save(_picture(), "TIFF", compression="tiff_lzw")
    yield "tiff-deflate-rgba.tif", _save(_picture("RGBA"), "TIFF", compression="tiff_adobe_deflate")
    yield "tiff-jpeg.tif", _save(_picture(), "TIFF", compression="jpeg")
    yield "tiff-grey16.tif", _save(_picture("I;16"), "TIFF")
    yield "tiff-int32.tif", _save(_picture("I"), "TIFF")
    yield "tiff-float.tif", _save(_picture("L").convert("F"), "TIFF")
    yield "tiff-pages.tif", _save(_frames(2), "TIFF")
    # Pillow picks the byte order from the mode: I;16B is written big-endian (MM).
    yield "tiff-motorola.tif", _save(_picture("I;16").convert("I;16B"), "TIFF", tiffinfo=tags)
    yield "tiff-bigtiff.tif", _save(_picture(), "TIFF", big_tiff=True)


def others() -> Iterator[tuple[str, bytes]]:
    """Formats only the default limits reach (no serving signature): what Pillow writes."""
    yield "other.ico", _save(_picture(size=(16, 16)), "ICO", sizes=[(16, 16)])
    yield "other.ppm", _save(_picture(), "PPM")
    yield "other.tga", _save(_picture(), "TGA", compression="tga_rle")
    yield "other.pcx", _save(_picture(), "PCX")
    yield "other.qoi", _save(_picture(), "QOI")
    yield "other.sgi", _save(_picture(), "SGI")
    if features.check("jpg_2000"):
        yield "other.jp2", _save(_picture(), "JPEG2000")


GROUPS: tuple[Callable[[], Iterator[tuple[str, bytes]]], ...] = (
    jpeg,
    png,
    gif,
    webp,
    bmp,
    tiff,
    others,
)


def seeds() -> dict[str, bytes]:
    return {name: data for group in GROUPS for name, data in group()}


def main(argv: list[str]) -> int:
    folder = Path(argv[1] if len(argv) > 1 else Path(__file__).parent / "seeds")
    folder.mkdir(parents=True, exist_ok=True)
    written = seeds()
    for name, data in written.items():
        (folder / name).write_bytes(data)
    total = sum(map(len, written.values()))
    print(f"{len(written)} seeds, {total} bytes, in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
