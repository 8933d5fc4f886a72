"""Progress hooks of long runs (training, calibration, evaluation): the command line draws them
as bars; library callers may pass nothing."""

from __future__ import annotations

from collections.abc import Callable

# (phase name, total units) -> advance(units)
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def no_progress(name: str, total: int) -> Callable[[int], None]:
    return lambda units: None
