"""A configuration error while a BentoML worker starts stops the whole server, once.

BentoML restarts a worker whose service ``__init__`` raised, every few seconds
and forever, printing the same traceback each time. A bad or missing variable
will not fix itself, so :func:`stop_on_config_error` prints one line naming it,
leaves it in ``SONA_FATAL_FILE`` (where ``sona serve`` reads it to exit with
status 2), asks the ``bentoml serve`` parent to shut down and exits with 2.
Outside a ``bentoml serve`` worker (tests building a service in-process) the
error is raised as usual.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from serving._memory import MALLOC_ENV
from sona import ConfigError
from sona_app.settings import Settings

__all__ = ["EXIT_CONFIG", "FATAL_FILE_ENV", "run_bentoml", "serving_config_error", "stop_on_config_error"]

EXIT_CONFIG = 2
#: ``sona serve`` points this at a temp file to learn why its server stopped.
FATAL_FILE_ENV = "SONA_FATAL_FILE"


def _parent_is_bentoml_serve() -> bool:
    try:
        cmdline = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(part.endswith(b"bentoml") for part in cmdline) and b"serve" in cmdline


@contextlib.contextmanager
def stop_on_config_error() -> Iterator[None]:
    """Wrap a service's start-up: a :class:`~sona.ConfigError` ends the server instead of a restart loop."""
    try:
        yield
    except ConfigError as exc:
        if not _parent_is_bentoml_serve():
            raise
        line = f"error: {exc}"
        print(line, file=sys.stderr, flush=True)
        fatal = os.environ.get(FATAL_FILE_ENV)
        if fatal:
            with contextlib.suppress(OSError):
                Path(fatal).write_text(line + "\n")
        os.kill(os.getppid(), signal.SIGTERM)
        os._exit(EXIT_CONFIG)


def serving_config_error(settings: Settings) -> str | None:
    """Why the services would refuse to start with ``settings`` (one line naming the variable), or None.

    ``sona serve`` asks before it launches BentoML: what ``load_settings`` accepts
    may still be refused by the services (no ``JWT_SECRET`` outside dev mode).
    """
    from serving._auth import resolve_jwt_secret

    try:
        resolve_jwt_secret(settings)
    except ConfigError as exc:
        return f"error: {exc}"
    return None


def run_bentoml(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``bentoml serve`` until it exits; its status, or 2 if a worker stopped it on a config error.

    The server gets a private ``BENTOML_HOME``: BentoML keeps its Prometheus
    multiprocess files in ``$BENTOML_HOME/prometheus_multiproc_dir`` and wipes that
    directory whenever any BentoML server starts, so a shared ``~/bentoml`` lets
    another server on the host erase this one's ``/metrics``.
    """
    with tempfile.TemporaryDirectory(prefix="sona-serve-") as tmp:
        fatal = Path(tmp) / "fatal"
        full = {
            **MALLOC_ENV,
            **env,
            FATAL_FILE_ENV: str(fatal),
            "BENTOML_HOME": str(Path(tmp) / "bentoml"),
        }
        proc = subprocess.Popen(list(cmd), env=full)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            code = proc.wait()
        return EXIT_CONFIG if fatal.exists() else code
