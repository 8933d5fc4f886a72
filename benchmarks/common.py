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


def best_rate(
    fn: Callable[[], Any], items_per_call: int, repeats: int = 5, min_time: float = 1.0
) -> float:
    """Items per second: the best of ``repeats`` timed rounds, each at least ``min_time`` long."""
    fn()  # warm-up
    best = 0.0
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_time:
                break
        best = max(best, calls * items_per_call / elapsed)
    return best


def write_csv(name: str, rows: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.csv"
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["measured_at", "machine", *rows[0].keys()])
        writer.writeheader()
        for row in rows:
            writer.writerow({"measured_at": stamp, "machine": platform.node() or "unknown", **row})
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(
            " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys)
        )
