"""Sort fuzzer inputs by failure mode, pick regression candidates, measure line coverage.

A failure mode is what a refusal came from: the exception Pillow (or our code) raised under
the ImageError, and the function that raised it. Modes whose exception is outside the tuple
``imaging._decode`` caught before commit 45fe6fb (OSError, SyntaxError, ValueError, EOFError,
IndexError, TypeError) would have escaped as server errors then: those are the ones worth
keeping in the regression corpus. A mode raised inside ``ai_photo_detector`` is our code
failing on an image, masked as a client error, and worth a look.

    python fuzz/triage.py fuzz/corpus fuzz/seeds [--copy DEST [--all]] [--lines]

``--copy`` minimises each candidate before writing it (greedy, keeping its mode).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import sys
import trace
import traceback
import types
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from decode_fuzz import DEFAULT, SPEC, UPLOAD, check
from PIL import Image, UnidentifiedImageError

from ai_photo_detector import imaging
from ai_photo_detector.evidence import provenance
from ai_photo_detector.imaging import ImageError, decode_image

# What imaging._decode caught before it caught every Exception.
NARROW = (
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
)


@dataclass(frozen=True)
class Mode:
    code: str
    cause: str  # exception type under the ImageError ("" when raised directly)
    where: str  # "caller>raiser", each module.function
    escaped_before: bool  # the pre-45fe6fb tuple would not have caught it
    ours: bool  # raised in ai_photo_detector, not in Pillow


def _modes(data: bytes) -> set[Mode]:
    found = set()
    for limits in (UPLOAD, DEFAULT):
        try:
            decode_image(data, SPEC, limits)
        except ImageError as exc:
            cause = exc.__cause__
            if cause is None or isinstance(cause, ImageError):
                found.add(Mode(exc.code, "", "", False, False))
                continue
            # The raising function and its caller: a helper (_binary.i16le) alone says little.
            frames = traceback.extract_tb(cause.__traceback__)[-2:]
            found.add(
                Mode(
                    exc.code,
                    type(cause).__name__,
                    ">".join(f"{Path(f.filename).stem}.{f.name}" for f in frames),
                    not isinstance(cause, NARROW),
                    "ai_photo_detector" in frames[-1].filename,
                )
            )
    return found


def minimise(data: bytes, mode: Mode) -> bytes:
    """Greedy delta debugging: drop ever smaller slices while the input keeps its mode."""
    step = len(data) // 2
    while step:
        at = 0
        while at < len(data):
            smaller = data[:at] + data[at + step :]
            if smaller and mode in _modes(smaller):
                data = smaller
            else:
                at += step
        step //= 2
    return data


def _executable_lines(module: types.ModuleType) -> set[int]:
    """Lines in function bodies: module and class bodies run at import, before tracing."""
    path = str(module.__file__)
    todo = [compile(Path(path).read_text(), path, "exec")]
    lines: set[int] = set()
    while todo:
        code = todo.pop()
        if code.co_flags & inspect.CO_OPTIMIZED:  # a function; its def line is no event
            lines.update(
                line for *_, line in code.co_lines() if line not in (None, code.co_firstlineno)
            )
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return lines


def _line_coverage(inputs: list[bytes]) -> None:
    tracer = trace.Trace(count=1, trace=0)
    # runctx traces new threads too: run it before anything starts the markup-scan thread.
    tracer.runctx("for data in inputs: check(data)", globals(), {"inputs": inputs})
    counts = tracer.results().counts
    for module in (imaging, provenance):
        wanted = _executable_lines(module)
        hit = {line for (name, line) in counts if name == module.__file__} & wanted
        share = len(hit) / len(wanted)
        print(f"{module.__name__}: {len(hit)}/{len(wanted)} lines ({share:.0%})")
        missed = sorted(wanted - hit)
        print(f"  not reached: {missed}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--copy", type=Path, help="copy the smallest input of each notable mode")
    parser.add_argument(
        "--all", action="store_true", help="with --copy: every mode, not only notable"
    )
    parser.add_argument("--lines", action="store_true", help="line coverage of the two modules")
    args = parser.parse_args()
    inputs = {
        path: path.read_bytes()
        for folder in args.folders
        for path in sorted(folder.iterdir())
        if path.is_file()
    }
    if args.lines:
        _line_coverage(list(inputs.values()))
    outcomes: Counter[str] = Counter()
    smallest: dict[Mode, tuple[int, Path]] = {}
    for path, data in inputs.items():
        for outcome in check(data):
            outcomes[outcome] += 1
        for mode in _modes(data):
            if mode not in smallest or len(data) < smallest[mode][0]:
                smallest[mode] = (len(data), path)
    print(f"{len(inputs)} inputs; outcomes per decode path: {dict(sorted(outcomes.items()))}")
    for mode, (size, path) in sorted(smallest.items(), key=lambda item: str(item[0])):
        flags = ("ESCAPED-BEFORE " if mode.escaped_before else "") + ("OURS " if mode.ours else "")
        print(f"{flags}{mode.code} {mode.cause} {mode.where}: {size} B {path}")
    if args.copy:
        args.copy.mkdir(parents=True, exist_ok=True)
        for mode, (_, path) in smallest.items():
            if args.all or mode.escaped_before or mode.ours:
                data = minimise(inputs[path], mode)
                digest = hashlib.sha1(data).hexdigest()[:8]
                parts = (mode.code, mode.cause, mode.where.split(">")[-1].replace(".", "-"))
                name = "-".join(part for part in (*parts, digest) if part).lower()
                (args.copy / name).write_bytes(data)
                print(f"{name}: {len(data)} B (from {len(inputs[path])} B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
