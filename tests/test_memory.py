"""The serving process caps glibc's malloc arenas (the soak in docs/reliability.md measures
what that saves); an operator's own MALLOC_ARENA_MAX wins."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from ai_photo_detector.serving.memory import limit_malloc_arenas

CHILD = """
import os, sys
from ai_photo_detector.serving.memory import limit_malloc_arenas
print(limit_malloc_arenas(int(sys.argv[1])), os.environ.get("MALLOC_ARENA_MAX"))
"""


def _run(count: int, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(count)], env=env, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_cap_is_set_and_passed_to_children() -> None:
    plain = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _run(2, plain) == "True 2"
    assert _run(2, {**plain, "MALLOC_ARENA_MAX": "4"}) == "True 4"  # the operator's stands
    assert limit_malloc_arenas(None) is False
