from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ai_photo_detector.imaging import (
    MARKUP,
    DecodeLimits,
    ImageError,
    PreprocessSpec,
    carries_markup,
    decode_image,
    estimate_jpeg_quality,
    preprocess_bytes,
    sniff_format,
    to_model_input,
)
from helpers import encode, smooth_image

SPEC = PreprocessSpec(input_size=64)


def _rgb(size: tuple[int, int] = (80, 60)) -> Image.Image:
    return smooth_image(np.random.default_rng(1), max(size)).resize(size)


def test_output_shape_and_normalisation() -> None:
    array, decoded = preprocess_bytes(encode(_rgb(), "PNG"), SPEC)
    assert array.shape == (3, 64, 64) and array.dtype == np.float32
    assert array.min() >= -1.0 and array.max() <= 1.0
    assert decoded.info.width == 80 and decoded.info.format == "PNG"


def test_model_input_is_the_plain_normalisation_bit_for_bit() -> None:
    """The in-place, planes-first arithmetic gives exactly (x / 255 - mean) / std."""
    spec = PreprocessSpec(input_size=64, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    image = _rgb((64, 64))
    pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    expected = ((pixels - mean) / std).transpose(2, 0, 1)
    actual = to_model_input(image, spec)
    assert actual.flags["C_CONTIGUOUS"] and actual.dtype == np.float32
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16"])
def test_colour_modes_become_rgb(mode: str) -> None:
    image = _rgb()
    if mode == "I;16":
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        converted = Image.fromarray(gray)
        data = encode(converted, "PNG")
    else:
        converted = image.convert(mode)
        data = encode(converted, "TIFF" if mode == "CMYK" else "PNG")
    decoded = decode_image(data, SPEC)
    assert decoded.image.mode == "RGB"
    if mode == "I;16":  # 16-bit is scaled, not clipped to white
        assert 20 < np.asarray(decoded.image).mean() < 235


def test_alpha_is_composited_on_white() -> None:
    transparent = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    decoded = decode_image(encode(transparent, "PNG"), SPEC)
    assert np.asarray(decoded.image)[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    data = encode(image, "JPEG", quality=95, exif=exif.tobytes())
    decoded = decode_image(data, PreprocessSpec(input_size=16, jpeg_draft=False))
    assert decoded.image.size == (20, 40)
    pixels = np.asarray(decoded.image).mean(axis=2)
    assert pixels[:18].mean() > 200 and pixels[22:].mean() < 50  # white half now on top


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue(), SPEC)
    red, _, blue = np.asarray(decoded.image).reshape(-1, 3).mean(axis=0)
    assert red > 200 and blue < 50


def test_jpeg_is_downscaled_in_the_dct_domain() -> None:
    data = encode(_rgb((1024, 768)), "JPEG", quality=90)
    fast = decode_image(data, SPEC)
    full = decode_image(data, PreprocessSpec(input_size=64, jpeg_draft=False))
    assert full.image.size == (1024, 768)
    assert fast.image.size[0] < 1024 and min(fast.image.size) >= 64
    assert fast.info.width == 1024  # the reported size is the file's


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _png_header_only(60000, 60000)
    assert len(bomb) < 200
    with pytest.raises(ImageError) as info:
        decode_image(bomb, SPEC, DecodeLimits(max_pixels=40_000_000))
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_body"),
        (b"<html><body>hello</body></html>", "unsupported_format"),
        (b"just some text", "unsupported_format"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "corrupt_image"),
    ],
)
def test_bad_inputs_raise_image_errors(data: bytes, code: str) -> None:
    limits = DecodeLimits(accepted_formats=frozenset({"JPEG", "PNG", "WEBP"}))
    with pytest.raises(ImageError) as info:
        decode_image(data, SPEC, limits)
    assert info.value.code == code


def test_truncated_jpeg_is_refused() -> None:
    data = encode(_rgb((200, 200)), "JPEG", quality=95)
    with pytest.raises(ImageError) as info:
        decode_image(data[: len(data) // 2], SPEC)
    assert info.value.code in {"truncated_image", "corrupt_image"}


def test_format_is_decided_by_magic_bytes() -> None:
    assert sniff_format(encode(_rgb(), "PNG")) == "PNG"
    assert sniff_format(encode(_rgb(), "JPEG")) == "JPEG"
    assert sniff_format(encode(_rgb(), "WEBP")) == "WEBP"
    limits = DecodeLimits(accepted_formats=frozenset({"JPEG"}))
    with pytest.raises(ImageError) as info:
        decode_image(encode(_rgb(), "PNG"), SPEC, limits)
    assert info.value.code == "unsupported_format"


@pytest.mark.parametrize("scan_beside", [False, True])
def test_polyglots_are_refused_first_whether_scanned_inline_or_beside(scan_beside: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    limits = DecodeLimits(reject_markup=True, accepted_formats=frozenset({"JPEG"}))
    jpeg = encode(_rgb((200, 200)), "JPEG", quality=95)
    cases = {
        "clean": (jpeg, None),
        "polyglot": (jpeg + b"<script>alert(1)</script>", "polyglot_file"),
        "corrupt polyglot": (jpeg[:300] + b"<HTML>", "polyglot_file"),  # markup wins
        "png polyglot": (encode(_rgb(), "PNG") + b"<html>", "polyglot_file"),  # before format
        "corrupt": (jpeg[:300], "truncated_or_corrupt"),
    }
    with ThreadPoolExecutor(1) as pool:
        for name, (data, code) in cases.items():
            try:
                decode_image(data, SPEC, limits, beside=pool if scan_beside else None)
                got = None
            except ImageError as exc:
                got = exc.code
            if code == "truncated_or_corrupt":
                assert got in {"truncated_image", "corrupt_image"}, name
            else:
                assert got == code, name


@pytest.mark.parametrize("quality", [50, 75, 90, 95])
def test_jpeg_quality_estimate(quality: int) -> None:
    with Image.open(io.BytesIO(encode(_rgb(), "JPEG", quality=quality))) as image:
        assert estimate_jpeg_quality(image) == quality


def test_markup_scan_agrees_with_a_plain_search() -> None:
    """Any marker, in any letter case, anywhere (near misses included) on random bytes."""
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(3000):
        data = bytearray(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))
        if rng.random() < 0.7:
            marker = bytearray(MARKUP[int(rng.integers(len(MARKUP)))])
            for i, byte in enumerate(marker):
                if rng.random() < 0.5 and 97 <= byte <= 122:
                    marker[i] = byte - 32
            if rng.random() < 0.3:
                marker = marker[:-1]  # a near miss must not match
            at = int(rng.integers(0, len(data) + 1))
            data[at:at] = marker
        expected = any(m in bytes(data).lower() for m in MARKUP)
        assert carries_markup(bytes(data)) == expected
        found += expected
    assert 1000 < found < 2900  # both outcomes well represented


# Found by fuzzing: Pillow's GIF plugin raises struct.error on this frame header while counting
# frames (a 64x64 screen, so no size check refuses it first). Any decoder failure must be an
# ImageError (a 4xx), never a server error.
GIF_STRUCT_ERROR = bytes.fromhex(
    "474946383761400040008000000000000000002c000000000800080000080f0001081c48b0a0c18308132a4c"
    "1810002c"
)


def test_a_decoder_crash_is_an_image_error() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(GIF_STRUCT_ERROR, SPEC)
    assert info.value.code in {"corrupt_image", "truncated_image"}
