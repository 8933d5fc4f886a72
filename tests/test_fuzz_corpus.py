"""The decode fuzzer's regression corpus, replayed through the fuzz harness itself, and a short
fuzz run (the long one is ``make fuzz``, nightly).

The rule: for any bytes, decoding returns an image or raises ImageError with a documented code.
``fuzz/decode_fuzz.py`` raises when it is broken; these tests only feed it.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, UnidentifiedImageError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "fuzz"))

import decode_fuzz  # noqa: E402
import make_seeds  # noqa: E402

# Pillow warns about the corrupt metadata these files are made of; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")

CORPUS = Path(__file__).parent / "fixtures" / "fuzz_corpus"
INPUTS = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.name != "README.md")
# Crashes found by fuzzing and fixed (45fe6fb): each stays a refusal on both paths (upload,
# default limits), whatever else changes.
KNOWN_CRASHES = {
    # struct.error from Pillow's GIF frame count (a 2-byte image descriptor).
    "gif-frame-count-struct-error-48b.gif": ("corrupt_image", "corrupt_image"),
    "gif-frame-count-struct-error-479b.gif": ("corrupt_image", "corrupt_image"),
    # KeyError from Pillow's TIFF frame count (a second page with an unknown compression).
    "tiff-frame-count-keyerror-1990b.tif": ("unsupported_format", "corrupt_image"),
}


# A memory finding must show as a MemoryError in a child with 2 GiB of address space, not as
# this machine running out.
_REPLAY = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
sys.path.insert(0, "fuzz")
import decode_fuzz
print(",".join(decode_fuzz.check(sys.stdin.buffer.read())))
"""


def _allowed(outcome: str) -> bool:
    return outcome.startswith("ok:") or outcome in decode_fuzz.IMAGE_ERROR_CODES


@pytest.mark.parametrize("path", INPUTS, ids=[path.name for path in INPUTS])
def test_every_corpus_input_is_decoded_or_refused_with_a_documented_code(path: Path) -> None:
    outcomes = decode_fuzz.check(path.read_bytes())
    assert outcomes and all(map(_allowed, outcomes)), outcomes


@pytest.mark.parametrize("name", sorted(KNOWN_CRASHES))
def test_known_crashes_stay_refusals(name: str) -> None:
    assert decode_fuzz.check((CORPUS / name).read_bytes()) == KNOWN_CRASHES[name]


def test_a_one_pixel_strip_is_viewed_without_resizing_all_of_it() -> None:
    """1x100000 PNG (277 bytes): model_view once resized it whole to 160 x 16,000,000 pixels
    (7.7 GB) before cropping; it now resizes only the centre square."""
    strip = (CORPUS / "png-1x100000-model-view-resize.png").read_bytes()
    run = subprocess.run(
        [sys.executable, "-c", _REPLAY], input=strip, cwd=ROOT, capture_output=True, timeout=120
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    assert run.stdout.decode().strip() == "image_too_large,ok:PNG"


def test_wide_pixels_are_scaled_in_little_memory() -> None:
    """A 36-megapixel 32-bit TIFF (231 kB): its scaling to 8 bits once made float64 copies
    (1.3 GB); under 1 GiB of address space it failed as corrupt. Found by the CI fuzz run."""
    buffer = io.BytesIO()
    Image.new("I", (6000, 6000)).save(buffer, "TIFF", compression="tiff_adobe_deflate")
    replay = _REPLAY.replace("2 << 30", "1 << 30")
    run = subprocess.run(
        [sys.executable, "-c", replay],
        input=buffer.getvalue(),
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    assert run.stdout.decode().strip() == "unsupported_format,ok:TIFF"


def test_a_jpeg_carrying_more_pictures_is_a_jpeg() -> None:
    """A JPEG with a second picture (MPF: stereo cameras, some phones) opens as MPO in Pillow;
    it was refused as corrupt for not matching its JPEG signature."""
    assert decode_fuzz.check(make_seeds.seeds()["jpeg-mpo.jpg"]) == ("ok:JPEG", "ok:JPEG")


def test_the_corpus_stays_small() -> None:
    assert 10 <= len(INPUTS) <= 100
    assert sum(path.stat().st_size for path in INPUTS) < 1024 * 1024


def test_the_seeds_reach_every_accepted_format() -> None:
    """Each format the API accepts decodes under the upload limits, and the other dataset
    formats under the default limits: no format goes unfuzzed because its seed is refused."""
    reached = [decode_fuzz.check(data) for data in make_seeds.seeds().values()]
    by_upload = {upload for upload, _ in reached}
    by_default = {default for _, default in reached}
    assert {f"ok:{name}" for name in decode_fuzz.SETTINGS.server.accepted_formats} <= by_upload
    assert {"ok:BMP", "ok:TIFF"} <= by_default


def test_the_mutator_repairs_png_crcs() -> None:
    seed = make_seeds.seeds()["png-a1111.png"]
    broken = seed.replace(b"Steps: 20", b"Steps: 99")  # a mutation: the tEXt CRC is now wrong
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(broken))
    with Image.open(io.BytesIO(decode_fuzz.fix_png_crcs(broken))) as image:
        assert "Steps: 99" in str(image.info["parameters"])


@pytest.mark.slow
def test_a_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris not installed (pip install -e '.[dev]')")
    seeds, corpus = tmp_path / "seeds", tmp_path / "corpus"
    make_seeds.main(["make_seeds", str(seeds)])
    corpus.mkdir()
    command = [
        sys.executable,
        str(ROOT / "fuzz" / "decode_fuzz.py"),
        str(corpus),  # new inputs go to the first folder only: the fixtures stay as they are
        str(seeds),
        str(CORPUS),
        "-max_total_time=30",
        f"-artifact_prefix={tmp_path}/",
    ]
    # Through a shell that forks it: Linux keeps a process's peak RSS across exec, so a child
    # exec'd straight from this (large) test process would start "using" its gigabytes, and
    # libFuzzer's -rss_limit_mb reads that peak.
    fresh = ["sh", "-c", '"$@"; exit $?', "sh", *command]
    run = subprocess.run(
        fresh, cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    output = run.stdout + run.stderr
    findings = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert run.returncode == 0, f"fuzzer failed ({findings}):\n{output[-6000:]}"
    assert "Done " in output, output[-2000:]
