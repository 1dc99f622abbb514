"""The BentoML service itself: start-up rules, and a real `bentoml serve` on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from serving._auth import issue_token
from serving._launch import serve
from serving._state import build_state
from sona import ConfigError, load_settings
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
