"""The BentoML service itself: start-up rules, and a real `bentoml serve` on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil
import pytest

from serving._auth import issue_token
from serving._launch import SERVICE, launch, serve
from serving._state import build_state
from sona import ConfigError
from sona_app.settings import load_settings
from tests.serving.conftest import SECRET, FittedEngine


def _env(tmp_path: Path, fitted_engine: FittedEngine, **extra: str) -> dict[str, str]:
    return {
        "SONA_DATA_DIR": str(tmp_path / "data"),
        "SONA_MODEL_DIR": str(fitted_engine.directory),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
        **extra,
    }


def test_service_refuses_to_start_without_jwt_secret(tmp_path: Path, fitted_engine: FittedEngine) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        build_state(load_settings(_env(tmp_path, fitted_engine)))


def test_dev_mode_starts_with_a_generated_secret(tmp_path: Path, fitted_engine: FittedEngine) -> None:
    state = build_state(load_settings(_env(tmp_path, fitted_engine, SONA_DEV_MODE="1")))
    try:
        assert len(state.jwt_secret) >= 32
        assert state.ready_model() and state.storage.ping()
        assert len(state.storage.load_catalog()) == len(state.engine.catalog)
    finally:
        state.stop()
        state.storage.dispose()


@pytest.mark.slow
def test_dev_mode_workers_share_one_secret_that_sona_token_mints_for(
    tmp_path: Path, fitted_engine: FittedEngine, known_user: str
) -> None:
    """Two workers without JWT_SECRET: a `sona token` token works on each of them.

    A secret generated per process made about half of these requests 401 (the
    worker that did not sign it).
    """
    env = _env(tmp_path, fitted_engine, SONA_DEV_MODE="1", BENTOML_CONFIG_OPTIONS="services.sona.workers=2")
    env_no_secret = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    with serve({**env, "JWT_SECRET": ""}, timeout=240) as base:
        minted = subprocess.run(
            [sys.executable, "-m", "serving.cli", "token", known_user],
            env={**env_no_secret, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        headers = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        codes = []
        for _ in range(24):  # a fresh connection each: the kernel hands them to either worker
            with httpx.Client(timeout=30) as client:
                r = client.post(
                    f"{base}/api/v1/recommendations", json={"user_id": known_user}, headers=headers
                )
            codes.append(r.status_code)
        assert codes == [200] * 24, codes


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_launch_leaves_no_worker_running_even_when_the_server_died_first(
    tmp_path: Path, fitted_engine: FittedEngine
) -> None:
    """BentoML's workers live in sessions of their own: the server's process group does not reach them."""
    env = _env(tmp_path, fitted_engine, JWT_SECRET=SECRET, BENTOML_CONFIG_OPTIONS="services.sona.workers=2")
    with tempfile.TemporaryFile(mode="w+b") as log, launch(SERVICE, env, log=log, timeout=240) as (proc, _):
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2
        assert all(os.getsid(w.pid) != os.getsid(proc.pid) for w in workers)
        os.kill(proc.pid, signal.SIGKILL)  # the server dies (or needs the SIGKILL fallback) ...
        proc.wait(10)
    _, alive = psutil.wait_procs(workers, timeout=5)
    alive = [w for w in alive if _running(w)]  # a zombie has stopped; only its reaping is pending
    for w in alive:  # clean up before failing, so this test leaves nothing either way
        w.kill()
    assert not alive, f"{len(alive)} workers outlived the server"  # ... and its workers are still stopped


@pytest.mark.slow
def test_bentoml_serve_round_trips_a_request_with_a_jwt(
    tmp_path: Path, fitted_engine: FittedEngine, known_user: str
) -> None:
    env = _env(tmp_path, fitted_engine, JWT_SECRET=SECRET)
    with serve(env, timeout=120) as base:
        token = issue_token(known_user, SECRET)
        r = httpx.post(
            f"{base}/api/v1/recommendations",
            json={"user_id": known_user, "limit": 5},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["recommendations"]) == 5
        denied = httpx.post(f"{base}/api/v1/recommendations", json={"user_id": known_user}, timeout=30)
        assert denied.status_code == 401
        assert denied.json()["reason"] == "missing"
        assert httpx.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'sona_http_requests_total{endpoint="/api/v1/recommendations",status="200"}' in metrics
        assert 'sona_jwt_failures_total{reason="missing"}' in metrics
