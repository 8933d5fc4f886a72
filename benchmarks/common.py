"""Small helpers shared by the benchmark scripts: timing and CSV results."""

from __future__ import annotations

import csv
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def best_rates(
    contenders: dict[str, Callable[[], Any]],
    items_per_call: int,
    rounds: int = 7,
    min_time: float = 0.7,
) -> dict[str, float]:
    """Items per second of each contender: the best of ``rounds`` timed rounds.

    Rounds alternate between contenders, so a burst of noise from the machine's neighbours
    hits them alike instead of deciding the ratio.
    """
    for fn in contenders.values():
        fn()  # warm-up
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(rounds):
        for name, fn in contenders.items():
            calls, started = 0, time.perf_counter()
            while True:
                fn()
                calls += 1
                elapsed = time.perf_counter() - started
                if elapsed >= min_time:
                    break
            best[name] = max(best[name], calls * items_per_call / elapsed)
    return best


def _stamped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    machine = platform.node() or "unknown"
    return [{"measured_at": stamp, "machine": machine, **row} for row in rows]


def write_csv(name: str, rows: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["measured_at", "machine", *rows[0].keys()])
        writer.writeheader()
        writer.writerows(_stamped(rows))
    return path


def append_csv(name: str, rows: list[dict[str, Any]]) -> Path:
    """Like write_csv, but the rows earlier runs wrote stay: for benchmarks whose every row
    costs minutes (columns a row lacks are left empty)."""
    path = RESULTS / f"{name}.csv"
    earlier: list[dict[str, Any]] = []
    if path.is_file():
        with path.open(newline="") as handle:
            earlier = list(csv.DictReader(handle))
    fresh = _stamped(rows)
    columns = list(dict.fromkeys(key for row in earlier + fresh for key in row))
    RESULTS.mkdir(exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(earlier + fresh)
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(
            " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys)
        )
