"""End to end over HTTP: profile/update → lora/train → job succeeds → only that user's ranking moves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from starlette.testclient import TestClient

from serving._state import ServiceState
from tests.serving.conftest import FittedEngine
from tests.serving.test_api import wait_for_job

Auth = Callable[..., dict[str, str]]


def drifting_history(state: ServiceState, n_old: int = 10, n_new: int = 5) -> list[dict[str, object]]:
    """Ten titles of one genre, then five of another: the drift an adapter can learn."""
    items = state.engine.catalog.items
    counts = {g: sum(g in it.genres for it in items) for it0 in items for g in it0.genres}
    genres = sorted(counts, key=lambda g: -counts[g])
    old = [it.content_id for it in items if genres[0] in it.genres and genres[1] not in it.genres][:n_old]
    new = [it.content_id for it in items if genres[1] in it.genres and genres[0] not in it.genres][:n_new]
    t0 = datetime(2026, 5, 1, 20, tzinfo=UTC)
    return [
        {
            "content_id": cid,
            "timestamp": (t0 + timedelta(days=i)).isoformat(),
            "completion_rate": 1.0,
            "watch_seconds": 5400,
            "rating": 5,
        }
        for i, cid in enumerate(old + new)
    ]


def ranking(client: TestClient, auth: Auth, user: str) -> list[tuple[str, float]]:
    r = client.post("/api/v1/recommendations", json={"user_id": user, "limit": 20}, headers=auth(user))
    assert r.status_code == 200, r.text
    return [(x["content_id"], x["confidence_score"]) for x in r.json()["recommendations"]]


def test_update_train_poll_changes_only_that_users_recommendations(
    db_client: TestClient, db_state: ServiceState, auth: Auth, fitted_engine: FittedEngine
) -> None:
    user = "e2e-viewer"
    events = drifting_history(db_state)
    assert len(events) == 15
    update = db_client.post(
        "/api/v1/profile/update", json={"user_id": user, "viewing_events": events}, headers=auth(user)
    )
    assert update.status_code == 200, update.text
    assert update.json()["events_processed"] == 15

    others = [str(u) for u in fitted_engine.events["user_id"].drop_duplicates().iloc[:5]]
    before = {u: ranking(db_client, auth, u) for u in [user, *others]}

    accepted = db_client.post("/api/v1/lora/train", json={"user_id": user}, headers=auth(user))
    assert accepted.status_code == 202, accepted.text
    job = wait_for_job(db_client, accepted.json()["job_id"], auth(user))
    assert job["status"] == "succeeded", job
    assert job["events_used"] == 15 and job["adapter_version"] == 1

    after = {u: ranking(db_client, auth, u) for u in [user, *others]}
    assert after[user] != before[user]
    for u in others:
        assert after[u] == before[u], f"user {u} changed although only {user} was trained"
