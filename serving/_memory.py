"""Give freed native memory back to the OS, so a long-running worker's RSS plateaus.

A soak of the gateway (benchmarks/soak.py) showed the Python heap flat
(tracemalloc: +0.2 MiB over 4 minutes) while RSS kept climbing in steps: numpy,
torch and the request threads free memory inside glibc's per-thread malloc arenas,
which keep it. Two standard remedies are applied: ``MALLOC_ARENA_MAX=2`` in the
environment of every server sona starts (:data:`MALLOC_ENV`, read by glibc at
process start), and a daemon thread calling ``malloc_trim(0)`` every minute.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

__all__ = ["MALLOC_ENV", "start_trimming"]

logger = logging.getLogger("serving.memory")

#: Environment for server processes: at most two malloc arenas instead of 8 per core.
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2"}


def start_trimming(interval_seconds: float = 60.0) -> threading.Thread | None:
    """Call glibc's ``malloc_trim(0)`` every ``interval_seconds`` in a daemon thread (no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        logger.info("malloc_trim is not available (not glibc); not trimming")
        return None
    trim.argtypes = [ctypes.c_size_t]
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval_seconds):
            trim(0)

    thread = threading.Thread(target=run, name="sona-malloc-trim", daemon=True)
    thread.start()
    return thread
