"""Fewer glibc malloc arenas for the serving process, when an operator asks for it.

glibc gives threads that allocate at once their own arenas (up to eight per core), and memory
freed in one arena is reused only by the threads that land on it. The service's decode,
inference and spare-time threads allocate and free large image buffers all the time, so freed
memory stays scattered across arenas: in soaks resident memory plateaus (no leak) well above
its idle size. Two arenas kept 14-28 % less after the load; whether they cost throughput is not
yet told apart from the machine's noise, so the cap is a setting (docs/reliability.md, "Soak").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def limit_malloc_arenas(count: int | None) -> bool:
    """Cap the arenas of this process (and, through the environment, of the children it
    starts later); True when the cap is in force. An operator's own ``MALLOC_ARENA_MAX`` wins;
    elsewhere than glibc this does nothing."""
    if count is None:
        return False
    if "MALLOC_ARENA_MAX" in os.environ:
        return True  # glibc read it when the process started
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False
    if mallopt(_M_ARENA_MAX, count) != 1:
        logger.warning("could not limit malloc arenas to %d", count)
        return False
    os.environ["MALLOC_ARENA_MAX"] = str(count)  # for the job worker and other children
    return True
