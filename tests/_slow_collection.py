"""pytest plugin: the tests run long after they were collected, as on a loaded CI machine.

``pytest -p tests._slow_collection`` makes :func:`time.time` (and ``time_ns``) run
``SONA_TEST_COLLECTION_AGE`` seconds (default 600) behind the real clock while
test modules are imported and collected, and the real clock from the first test
on. Anything time-sensitive built at import or collection time (a token, a
timestamp, a deadline) is therefore already that old when a test uses it, which
is what a 10-minute collection-to-run gap does on a busy 2-core runner. Values
built inside fixtures and test bodies are unaffected, so a time-safe suite passes.
"""

from __future__ import annotations

import os
import time

import pytest

_AGE = float(os.environ.get("SONA_TEST_COLLECTION_AGE", "600"))
_real_time = time.time
_real_time_ns = time.time_ns


def _aged_time() -> float:
    return _real_time() - _AGE


def _aged_time_ns() -> int:
    return _real_time_ns() - int(_AGE * 1e9)


# Installed on import: pytest imports ``-p`` plugins before conftest files and test modules.
time.time = _aged_time
time.time_ns = _aged_time_ns


def pytest_collection_finish(session: pytest.Session) -> None:
    """Collection is over: the tests see the real clock."""
    time.time = _real_time
    time.time_ns = _real_time_ns
