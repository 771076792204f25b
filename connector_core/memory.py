"""Keep a long-running connector's memory flat under glibc.

glibc gives threads that allocate at the same time their own malloc arenas (up to eight per
core) and keeps the memory freed in each for later. The connector's fetch, submit and poll
threads all allocate at once, so each arena ends up holding its own high-water mark: a
100,000-invoice backlog peaked at 262 MB with the default, 239 MB with two arenas, at the same
CPU per document (benchmarks/results, docs/performance.md).
"""

from __future__ import annotations

import ctypes
import os
import sys

#: glibc's mallopt() parameter for the arena limit (malloc.h).
_M_ARENA_MAX = -8
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; True if applied.

    Call before any thread starts: arenas made earlier stay. An operator's own
    ``MALLOC_ARENA_MAX`` wins, and other C libraries (musl, macOS) are left alone.
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))
