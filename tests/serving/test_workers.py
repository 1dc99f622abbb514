"""Two workers of one `sona serve` answer as one: state lives in the database, not in a worker.

The kernel hands each fresh connection to either worker, so a list that depends
on which worker answered shows up as two different answers among the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from serving._auth import issue_token
from serving._launch import SERVICE, free_port, launch, serve
from tests.serving.conftest import SECRET, FittedEngine

API = "/api/v1"
FRESH_CONNECTIONS = 24


def _titles(base: str, user_id: str, headers: dict[str, str]) -> tuple[str, ...]:
    with httpx.Client(timeout=30) as client:  # a new connection: either worker may take it
        r = client.post(
            f"{base}{API}/recommendations", json={"user_id": user_id, "limit": 10}, headers=headers
        )
    assert r.status_code == 200, r.text
    return tuple(item["content_id"] for item in r.json()["recommendations"])


def _env(tmp_path: Path, fitted_engine: FittedEngine, workers: int) -> dict[str, str]:
    return {
        "SONA_DATA_DIR": str(tmp_path / "data"),
        "SONA_MODEL_DIR": str(fitted_engine.directory),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
        "JWT_SECRET": SECRET,
        "SONA_RATE_LIMIT": "0",
        "BENTOML_CONFIG_OPTIONS": f"services.sona.workers={workers}",
    }


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _burst(base: str, user_id: str, headers: dict[str, str], connections: int, rounds: int) -> None:
    """``connections`` keep-alive connections opened at once, as a load balancer's pool does."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:

        async def one_connection() -> None:
            for _ in range(rounds):
                r = await client.post(f"{API}/recommendations", json={"user_id": user_id, "limit": 10})
                assert r.status_code == 200, r.text

        await asyncio.gather(*(one_connection() for _ in range(connections)))


@pytest.mark.slow
def test_connections_opened_together_reach_both_workers(
    tmp_path: Path, fitted_engine: FittedEngine, known_user: str
) -> None:
    """Each worker listens on its own SO_REUSEPORT socket, so a pool opened at once is spread.

    On BentoML's shared socket, one worker's event loop accepted all 32 pending
    connections and did ~99 % of the work: two workers served no faster than one.
    """
    headers = {"Authorization": f"Bearer {issue_token(known_user, SECRET)}"}
    env = _env(tmp_path, fitted_engine, workers=2)
    with (
        tempfile.TemporaryFile(mode="w+b") as log,
        launch(SERVICE, env, log=log, timeout=240) as (proc, base),
    ):
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) == 2, workers
        asyncio.run(_burst(base, known_user, headers, connections=4, rounds=2))  # warm both up
        before = [_cpu_seconds(w) for w in workers]
        asyncio.run(_burst(base, known_user, headers, connections=32, rounds=8))
        used = [_cpu_seconds(w) - b for w, b in zip(workers, before, strict=True)]
    shares = [u / sum(used) for u in used]
    assert min(shares) > 0.2, f"CPU seconds per worker {used}: one worker took the connections"


@pytest.mark.slow
def test_two_workers_give_one_answer_after_a_profile_update(
    tmp_path: Path, fitted_engine: FittedEngine, known_user: str
) -> None:
    with serve(_env(tmp_path, fitted_engine, workers=2), timeout=240) as base:
        headers = {"Authorization": f"Bearer {issue_token(known_user, SECRET)}"}
        before = {_titles(base, known_user, headers) for _ in range(FRESH_CONNECTIONS)}
        assert len(before) == 1, f"the workers disagree before any update: {before}"
        (first,) = before
        top = first[0]

        with httpx.Client(timeout=30) as client:
            r = client.post(
                f"{base}{API}/profile/update",
                json={
                    "user_id": known_user,
                    "viewing_events": [
                        {
                            "content_id": top,
                            "completion_rate": 1.0,
                            "timestamp": datetime.now(UTC).isoformat(),
                        }
                    ],
                },
                headers=headers,
            )
        assert r.status_code == 200, r.text

        # Whichever worker took the update, the other follows the change feed (polled every 200 ms).
        deadline = time.monotonic() + 10
        while top in _titles(base, known_user, headers):
            assert time.monotonic() < deadline, "the watched title is still recommended after 10 s"
            time.sleep(0.05)
        time.sleep(1.0)  # past the slowest worker's next poll
        after = [_titles(base, known_user, headers) for _ in range(FRESH_CONNECTIONS)]
        assert len(set(after)) == 1, f"{len(set(after))} different answers from two workers: {set(after)}"
        assert top not in after[0]
        assert after[0] != first


@pytest.mark.slow
def test_sona_serve_workers_2_starts_two_workers_each_listening_on_the_port(
    tmp_path: Path, fitted_engine: FittedEngine
) -> None:
    """``sona serve --workers 2`` (the gateway, whose BentoML name has a '-') runs two listening workers."""
    port = free_port()
    env = {
        **os.environ,
        **_env(tmp_path, fitted_engine, workers=1),
        "BENTOML_CONFIG_OPTIONS": "",
        "BENTOML_HOME": str(tmp_path / "bentoml"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "sona serve --workers 2 was not ready in 240 s"
            time.sleep(0.5)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "--fd" in p.cmdline()]
        listening = [
            w.pid
            for w in workers
            for c in w.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert len(workers) == 2 and sorted(listening) == sorted(w.pid for w in workers), (workers, listening)
    finally:
        tree = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        finally:
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
