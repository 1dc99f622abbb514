"""Loaded by the worker of a ``soak.py --tracemalloc`` server (this folder is on its PYTHONPATH).

Tracing from start-up would make the worker's start take many minutes, so it
waits until soak.py creates ``$SONA_SOAK_TRACEMALLOC/start`` (after a warm-up),
then traces allocations and writes ``<pid>-<n>.snap`` every minute, for
``soak.py --diff`` to name the allocation sites that grew.
"""

import os

_DIR = os.environ.get("SONA_SOAK_TRACEMALLOC")
try:
    with open("/proc/self/cmdline", "rb") as _f:
        _WORKER = b"_bentoml_impl.worker" in _f.read()  # the service worker only, not the CLI
except OSError:
    _WORKER = False
if _DIR and _WORKER:
    import threading
    import time
    import tracemalloc

    def _trace() -> None:
        while not os.path.exists(os.path.join(_DIR, "start")):
            time.sleep(1)
        tracemalloc.start(12)
        n = 0
        while True:
            tracemalloc.take_snapshot().dump(os.path.join(_DIR, f"{os.getpid()}-{n:03d}.snap"))
            n += 1
            time.sleep(60)

    threading.Thread(target=_trace, daemon=True, name="soak-tracemalloc").start()
