"""The Discovery BentoML service under a real ``bentoml serve`` on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from serving._auth import issue_token
from serving._launch import serve
from sona import Catalog, Sona, SonaConfig
from sona.engine import read_model_id
from sona.storage import Storage
from sona_app.bootstrap import publish_model
from sona_app.settings import load_settings

SECRET = "discovery-service-secret-0123456789abcdef"
FAN = "horror-fan"


@pytest.mark.slow
def test_bentoml_serve_round_trips_anonymous_and_personalized_search(
    tmp_path: Path, synthetic: tuple[Catalog, pd.DataFrame]
) -> None:
    catalog, events = synthetic
    engine_dir = tmp_path / "model"
    Sona(catalog, config=SonaConfig(epochs=2, dim=16, hidden_dim=32, progress=False, seed=0)).fit(
        events
    ).save(engine_dir)
    url = f"sqlite:///{tmp_path / 'discovery.db'}"
    storage = Storage(url)
    storage.upgrade()
    storage.upsert_content(catalog)
    storage.dispose()
    env = {
        "SONA_DATA_DIR": str(tmp_path / "data"),
        "SONA_MODEL_DIR": str(engine_dir),
        "DATABASE_URL": url,
        "JWT_SECRET": SECRET,
    }
    body = {"query": "night", "page_size": 10}
    with serve(env, service="serving.discovery:Discovery", ready_path="/readyz", timeout=150) as base:
        anon = httpx.post(f"{base}/api/v1/search", json=body, timeout=30)
        assert anon.status_code == 200, anon.text
        anon_body = anon.json()
        assert anon_body["personalized"] is False and len(anon_body["results"]) == 10
        assert all(r["personalization_score"] is None for r in anon_body["results"])

        token = issue_token(FAN, SECRET)
        mine = httpx.post(
            f"{base}/api/v1/search", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert mine.status_code == 200, mine.text
        mine_body = mine.json()
        assert mine_body["personalized"] is True
        assert mine_body["total_count"] == anon_body["total_count"]
        assert all(0.0 <= r["personalization_score"] <= 1.0 for r in mine_body["results"])

        injected = {"query": "'; DROP TABLE content; --", "page_size": 10}
        assert httpx.post(f"{base}/api/v1/search", json=injected, timeout=30).status_code == 200
        after = Storage(url)
        try:
            assert len(after.load_catalog()) == len(catalog)  # the query reached no SQL
        finally:
            after.dispose()

        forged = issue_token(FAN, "some-other-secret-0123456789abcdef")
        bad = httpx.post(
            f"{base}/api/v1/search", json=body, headers={"Authorization": f"Bearer {forged}"}, timeout=30
        )
        assert bad.status_code == 401

        # The mounted app's own docs, not an empty shell's (the playback service's problem).
        spec = httpx.get(f"{base}/openapi.json", timeout=30)
        assert spec.status_code == 200 and "/api/v1/search" in spec.json()["paths"]
        docs = httpx.get(f"{base}/docs", timeout=30)
        assert docs.status_code == 200 and "/openapi.json" in docs.text


@pytest.mark.slow
def test_discovery_serves_the_published_model_and_follows_a_rollout(
    tmp_path: Path, synthetic: tuple[Catalog, pd.DataFrame]
) -> None:
    """Like the SONA service: the current model from the database (no SONA_MODEL_DIR), then the next one."""
    catalog, events = synthetic
    url = f"sqlite:///{tmp_path / 'discovery.db'}"
    storage = Storage(url)
    storage.upgrade()
    storage.upsert_content(catalog)
    dirs = []
    for seed in (0, 1):
        d = tmp_path / f"model-{seed}"
        config = SonaConfig(epochs=2, dim=16, hidden_dim=32, progress=False, seed=seed)
        Sona(catalog, config=config).fit(events).save(d)
        dirs.append(d)
    publish_model(storage, dirs[0])
    env = {
        "SONA_DATA_DIR": str(tmp_path / "data"),
        "SONA_MODEL_DIR": str(tmp_path / "no-model-here"),
        "DATABASE_URL": url,
        "JWT_SECRET": SECRET,
    }
    body = {"query": "night", "page_size": 10}
    headers = {"Authorization": f"Bearer {issue_token(FAN, SECRET)}"}

    def scores(base: str) -> dict[str, float]:
        r = httpx.post(f"{base}/api/v1/search", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["personalized"] is True  # the published model, though SONA_MODEL_DIR is empty
        return {x["content"]["id"]: x["personalization_score"] for x in r.json()["results"]}

    try:
        with serve(env, service="serving.discovery:Discovery", ready_path="/readyz", timeout=150) as base:
            first = scores(base)
            assert scores(base) == first  # stable while the model stays: a change below is the rollout
            publish_model(storage, dirs[1])  # the rollout: published and made current
            deadline = time.monotonic() + 30
            while scores(base) == first:
                assert time.monotonic() < deadline, "discovery still personalizes with the old model"
                time.sleep(0.5)
    finally:
        storage.dispose()


@pytest.mark.slow
def test_gateway_search_follows_a_model_rollout(
    tmp_path: Path, synthetic: tuple[Catalog, pd.DataFrame], redis_url: str
) -> None:
    """The gateway's search personalizes with the served engine, not the one it started with."""
    from starlette.testclient import TestClient

    from serving.gateway import build_gateway

    catalog, events = synthetic
    dirs = []
    for seed in (0, 1):
        d = tmp_path / f"model-{seed}"
        config = SonaConfig(epochs=2, dim=16, hidden_dim=32, progress=False, seed=seed)
        Sona(catalog, config=config).fit(events).save(d)
        dirs.append(d)
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    settings = load_settings(
        {
            "SONA_DATA_DIR": str(tmp_path / "data"),
            "SONA_MODEL_DIR": str(dirs[0]),
            "DATABASE_URL": url,
            "JWT_SECRET": SECRET,
            "REDIS_URL": redis_url,
        }
    )
    parts = build_gateway(settings)
    headers = {"Authorization": f"Bearer {issue_token(FAN, SECRET)}"}
    body = {"query": "night", "page_size": 10}
    storage = Storage(url)
    try:
        with TestClient(parts.app) as client:

            def scores() -> dict[str, float]:
                r = client.post("/api/v1/search", json=body, headers=headers)
                assert r.status_code == 200, r.text
                assert r.json()["personalized"] is True
                return {x["content"]["id"]: x["personalization_score"] for x in r.json()["results"]}

            first = scores()
            assert scores() == first
            publish_model(storage, dirs[1])  # the rollout: published and made current
            deadline = time.monotonic() + 30
            while parts.state.engine.model_id_ == read_model_id(dirs[0]):
                assert time.monotonic() < deadline, "the gateway did not switch models"
                time.sleep(0.2)
            assert scores() != first, "search still personalizes with the start-up model"
    finally:
        parts.state.stop()
        parts.state.storage.dispose()
        storage.dispose()
