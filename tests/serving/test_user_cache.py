"""A serving process keeps at most SONA_USER_CACHE_SIZE users in its engine, and loses nothing by it.

Users past the bound are dropped from the engine (least recently served first) and
read back from the database on their next request, with the same answers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest

from serving._auth import SERVICE_SCOPE, issue_token
from serving._launch import serve
from sona import Sona
from sona.storage import Storage
from sona_app.bootstrap import LiveEngine
from sona_app.settings import load_settings
from tests.serving.conftest import SECRET, FittedEngine


def _new_user_events(engine: Sona, user_id: str, start: int, n: int = 12) -> pd.DataFrame:
    """``n`` liked views of titles ``start..`` by a user the model was not fitted with (built per call)."""
    ids = [item.content_id for item in engine.catalog.items]
    t0 = datetime.now(UTC) - timedelta(days=1)
    return pd.DataFrame(
        {
            "event_id": [f"{user_id}-{i}" for i in range(n)],
            "user_id": user_id,
            "content_id": [ids[(start + 7 * i) % len(ids)] for i in range(n)],
            "timestamp": [t0 + timedelta(minutes=i) for i in range(n)],
            "completion_rate": 0.95,
            "watch_seconds": 2400.0,
            "rating": 5.0,
        }
    )


def _top(engine: Sona, user_id: str) -> list[str]:
    return [str(r.content_id) for r in engine.recommend(user_id, k=8)]


def test_users_past_the_bound_are_dropped_and_read_back_unchanged(
    tmp_path: Path, fitted_engine: FittedEngine
) -> None:
    settings = load_settings({"SONA_DATA_DIR": str(tmp_path), "SONA_USER_CACHE_SIZE": "2"})
    assert settings.user_cache_size == 2
    storage = Storage(f"sqlite:///{tmp_path / 'cache.db'}")
    storage.upgrade()
    engine = Sona.load(fitted_engine.directory)
    storage.upsert_content(engine.catalog)
    users = ["cache-a", "cache-b", "cache-c"]
    for i, user in enumerate(users):
        storage.add_events(_new_user_events(engine, user, start=11 * i))
    live = LiveEngine(engine, storage, settings=settings)  # no follower thread: every step is explicit
    try:
        live.ensure_user("cache-a")
        assert engine.known_user("cache-a")
        first = _top(engine, "cache-a")
        live.ensure_users(["cache-b", "cache-c"])  # a third user: the least recent (cache-a) is dropped
        assert [engine.known_user(u) for u in users] == [False, True, True]
        assert live.forgotten == 1
        live.ensure_user("cache-a")  # its next request reads it back from the database
        assert engine.known_user("cache-a") and _top(engine, "cache-a") == first
        assert [engine.known_user(u) for u in users] == [True, False, True]
        assert live.forgotten == 2
    finally:
        storage.dispose()


@pytest.mark.slow
def test_a_served_user_dropped_by_the_bound_gets_the_same_answer(
    tmp_path: Path, fitted_engine: FittedEngine
) -> None:
    """A real `bentoml serve` with SONA_USER_CACHE_SIZE=2: a user's events survive being dropped."""
    env = {
        "SONA_DATA_DIR": str(tmp_path / "data"),
        "SONA_MODEL_DIR": str(fitted_engine.directory),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
        "JWT_SECRET": SECRET,
        "SONA_USER_CACHE_SIZE": "2",
    }
    engine = Sona.load(fitted_engine.directory)
    service = {"Authorization": f"Bearer {issue_token('tester', SECRET, scopes=(SERVICE_SCOPE,))}"}
    others = [str(u) for u in fitted_engine.events["user_id"].value_counts().index[:3]]
    views = _new_user_events(engine, "cache-new", start=5)
    body = {
        "user_id": "cache-new",
        "viewing_events": [
            {
                "content_id": r.content_id,
                "timestamp": r.timestamp.isoformat(),
                "completion_rate": r.completion_rate,
                "watch_seconds": r.watch_seconds,
                "rating": r.rating,
            }
            for r in views.itertuples()
        ],
    }
    with serve(env, timeout=240) as base, httpx.Client(base_url=base, headers=service, timeout=60) as http:

        def recs(user: str) -> list[str]:
            r = http.post("/api/v1/recommendations", json={"user_id": user, "limit": 8})
            assert r.status_code == 200, r.text
            return [rec["content_id"] for rec in r.json()["recommendations"]]

        def dropped() -> float:
            text = http.get("/metrics").text
            found = re.search(r"^sona_users_dropped_total (\S+)$", text, re.MULTILINE)
            return float(found[1]) if found else 0.0

        r = http.post("/api/v1/profile/update", json=body)
        assert r.status_code == 200, r.text
        cold = recs("cold-start-probe")  # a user with no events: what "forgotten" would look like
        before = recs("cache-new")
        assert before != cold
        for user in others:  # three more users through a 2-user bound: cache-new is dropped
            recs(user)
        assert dropped() >= 2
        assert recs("cache-new") == before  # read back from the database, not served cold
