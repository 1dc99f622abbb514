"""Start ``bentoml serve`` for the SONA service as a child process (tests, benchmarks, quickstart).

:func:`serve` picks a free loopback port, starts the server with the given
environment, waits for ``/ready`` and stops the server and all its workers on
exit, so no process outlives the block that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import httpx
import psutil

from serving._memory import MALLOC_ENV
from serving._reuseport import serve_command

__all__ = ["free_port", "launch", "serve"]

SERVICE = "serving.sona_service:SonaService"
ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def launch(
    service: str,
    env: Mapping[str, str],
    *,
    log: BinaryIO,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 180.0,
    ready_path: str = "/ready",
    drop_env: tuple[str, ...] = (),
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``bentoml serve service`` in its own process group until the block ends; yields (process, base URL).

    ``env`` is added to the current environment minus ``drop_env``; output goes
    to ``log`` (a binary file opened for reading too: its tail goes into errors).
    Raises ``RuntimeError`` with that tail if the server exits or is not ready
    at ``ready_path`` within ``timeout`` seconds.
    """
    port = port or free_port(host)
    # A private BENTOML_HOME unless ``env`` names one: BentoML wipes
    # $BENTOML_HOME/prometheus_multiproc_dir whenever a server starts, so servers sharing
    # ~/bentoml (parallel tests, benchmarks) would erase each other's /metrics.
    home = tempfile.TemporaryDirectory(prefix="sona-bentoml-")
    full_env = {
        **{k: v for k, v in os.environ.items() if k not in drop_env},
        "BENTOML_DO_NOT_TRACK": "True",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "BENTOML_HOME": home.name,
        **MALLOC_ENV,
        **env,
    }
    cmd, listen_env = serve_command(service, host, port)
    full_env.update(listen_env)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://{host}:{port}"
    workers: list[psutil.Process] = []
    try:
        _wait_ready(proc, base, timeout, log, ready_path)
        workers = _tree(proc)  # known even if the server dies before the block ends
        yield proc, base
    finally:
        _stop(proc, workers)
        home.cleanup()


@contextmanager
def serve(
    env: Mapping[str, str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 180.0,
    service: str = SERVICE,
    ready_path: str = "/ready",
) -> Iterator[str]:
    """Run the service until the block ends; yields its base URL.

    ``env`` is added to the current environment (``JWT_SECRET``,
    ``DATABASE_URL``, ``SONA_MODEL_DIR``, ...). ``service`` is the BentoML import
    path (default: the SONA service) and ``ready_path`` the URL polled until it
    answers 200 (BentoML's own ``/readyz`` for services without a ``/ready`` route).
    Raises ``RuntimeError`` with the server's log tail if it exits or is not ready
    within ``timeout`` seconds.
    """
    with (
        tempfile.TemporaryFile(mode="w+b") as log,
        launch(service, env, log=log, host=host, port=port, timeout=timeout, ready_path=ready_path) as (
            _,
            base,
        ),
    ):
        yield base


def _tail(log: BinaryIO) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-4000:]


def _wait_ready(
    proc: subprocess.Popen[bytes], base: str, timeout: float, log: BinaryIO, ready_path: str = "/ready"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{base}{ready_path}", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"bentoml serve was not ready after {timeout:.0f} s:\n{_tail(log)}")


def _tree(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The server's descendants now (its workers), or none if it is gone."""
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _running(p: psutil.Process) -> bool:
    """Alive and not a zombie (an orphan nobody reaps yet cannot be stopped any further)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop(proc: subprocess.Popen[bytes], known: Sequence[psutil.Process] = ()) -> None:
    """Stop the server and every worker it started.

    BentoML starts each worker in a session of its own, so signalling the
    server's process group misses them: a server that already died, or one
    that needs the SIGKILL fallback, would leave them running. The workers are
    collected (``known``, from start-up, plus the current children) before any
    signal, and those that outlive the server are terminated, then killed.
    psutil refuses to signal a pid that was reused by another process.
    """
    workers = {p.pid: p for p in [*known, *_tree(proc)]}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server stops its workers itself
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    alive = [p for p in workers.values() if _running(p)]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
