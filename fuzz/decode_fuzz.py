"""Coverage-guided fuzzing (atheris, libFuzzer) of image decoding and metadata reading.

The rule under test: for any bytes, ``decode_image`` returns a ``DecodedImage`` or raises
``ImageError`` with one of the documented codes. Any other exception, a hang (``-timeout``) or
runaway memory (``-rss_limit_mb``) is a finding. On success the model's input is built too, and
the provenance reader, which must never raise, is also called on its own.

    python fuzz/make_seeds.py fuzz/seeds
    python fuzz/decode_fuzz.py fuzz/corpus fuzz/seeds tests/fixtures/fuzz_corpus \\
        -max_total_time=600

:func:`check` is the whole harness; ``tests/test_fuzz_corpus.py`` replays the regression
corpus through it without atheris.
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import struct
import sys
import time
import types
import warnings
import zlib
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ai_photo_detector.evidence.provenance import Provenance, read_provenance
from ai_photo_detector.imaging import (
    DecodeLimits,
    ImageError,
    PreprocessSpec,
    decode_image,
    to_model_input,
    upload_limits,
)
from ai_photo_detector.settings import Settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The image codes README.md documents for clients; a new one is an API change, so it fails here
# until it is documented and added.
IMAGE_ERROR_CODES = frozenset(
    {
        "empty_body",
        "unsupported_format",
        "corrupt_image",
        "truncated_image",
        "image_too_small",
        "image_too_large",
        "polyglot_file",
    }
)
SETTINGS = Settings()
# The shipped model's preprocessing: what the service applies to every upload.
SPEC = PreprocessSpec.model_validate(
    json.loads((ROOT / "models" / "default" / "manifest.json").read_text())["preprocessing"]
)
# The service refuses bigger bodies before decoding (413), so nothing above this reaches here.
MAX_BYTES = SETTINGS.server.max_upload_bytes
# Two sets of limits: the API's (serving formats only, polyglots refused) and the defaults
# that training, scoring and dataset scans decode with (any format Pillow opens, 1-pixel sides).
UPLOAD = upload_limits(SETTINGS)
DEFAULT = DecodeLimits()
_BESIDE = ThreadPoolExecutor(1, thread_name_prefix="fuzz-markup-scan")

# libFuzzer defaults, unless given on the command line. 64 KiB, not the 20 MiB upload limit:
# larger inputs add pixel data, not new parsing, and slow every mutation down.
DEFAULT_FLAGS = {
    "-timeout": "10",
    "-rss_limit_mb": "2048",
    "-max_len": str(64 * 1024),
    "-dict": str(HERE / "image.dict"),
    "-artifact_prefix": str(HERE / "findings") + "/",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(data: bytes, limits: DecodeLimits, beside: Executor | None) -> str:
    try:
        decoded = decode_image(data, SPEC, limits, beside=beside)
    except ImageError as exc:
        if exc.code not in IMAGE_ERROR_CODES:
            raise AssertionError(f"undocumented ImageError code {exc.code!r}: {exc}") from exc
        return exc.code
    image = decoded.image
    assert image.mode == "RGB", f"decoded image is {image.mode}, not RGB"
    assert isinstance(decoded.info.provenance, Provenance)
    array = to_model_input(image, SPEC)
    size = SPEC.input_size
    assert array.shape == (3, size, size) and array.dtype == np.float32, array.shape
    assert bool(np.isfinite(array).all()), "model input holds NaN or infinity"
    return f"ok:{decoded.info.format}"


def _provenance(data: bytes) -> None:
    """``read_provenance`` on its own, which must never raise: inside ``decode_image`` a raise
    would only show as ``corrupt_image``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except Exception:
        return  # nothing Pillow opens: no metadata to read
    with image:
        width, height = image.size
        # Bounded like every real caller: PNG EXIF reading loads the pixels.
        if width * height > DEFAULT.max_pixels:
            return
        found = read_provenance(image)
    assert isinstance(found, Provenance)


def check(data: bytes) -> tuple[str, ...]:
    """One input through every path under test: each path's outcome ("ok:FORMAT" or an error
    code). Raises when the rule is broken."""
    if len(data) > MAX_BYTES:
        return ("body_too_large",)
    # The API scans for markup beside the decode, batch jobs before it: alternate, cheaply.
    beside = _BESIDE if len(data) % 2 else None
    outcomes = (_decode(data, UPLOAD, beside), _decode(data, DEFAULT, None))
    _provenance(data)
    return outcomes


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every complete PNG chunk's CRC: without it nearly every mutation of a PNG dies
    at the CRC check and never reaches the chunk parsers."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    fixed = bytearray(data)
    at = len(PNG_SIGNATURE)
    while at + 12 <= len(fixed):
        (length,) = struct.unpack_from(">I", fixed, at)
        end = at + 8 + length
        if end + 4 > len(fixed):
            break
        struct.pack_into(">I", fixed, end, zlib.crc32(fixed[at + 4 : end]))
        at = end + 4
    return bytes(fixed)


def _instrument(atheris: Any) -> int:
    """Instrument Pillow and this project only: everything else is noise to the coverage
    signal and slows each run."""
    Image.init()  # import every format plugin now, so they are instrumented too
    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and str(obj.__module__).startswith(
            ("PIL.", "ai_photo_detector.")
        ):
            atheris.instrument_func(obj)
            count += 1
    return count


def main(argv: list[str]) -> None:
    atheris: Any = importlib.import_module("atheris")
    given = {arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("-")}
    flags = [f"{name}={value}" for name, value in DEFAULT_FLAGS.items() if name not in given]
    if "-artifact_prefix" not in given:
        (HERE / "findings").mkdir(exist_ok=True)
    warnings.simplefilter("ignore")  # Pillow's corrupt-data warnings would flood the log
    print(f"INFO: instrumented {_instrument(atheris)} functions", file=sys.stderr)

    # libFuzzer's alarm has let a 29-second input finish unreported (written only as a slow
    # unit): an input that returns after the timeout is a finding too.
    flag = next((arg for arg in reversed(flags + argv[1:]) if arg.startswith("-timeout=")), "")
    timeout = float(flag.partition("=")[2] or 0)

    def one_input(data: bytes) -> None:
        started = time.monotonic()
        check(data)
        took = time.monotonic() - started
        if timeout and took > timeout:
            raise AssertionError(f"took {took:.1f} s, over the {timeout:g} s timeout")

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        mutated: bytes = atheris.Mutate(data, max_size)
        # One in eight keeps its broken CRCs, so the CRC error path stays covered.
        return mutated if seed % 8 == 0 else fix_png_crcs(mutated)

    atheris.Setup([argv[0], *flags, *argv[1:]], one_input, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
