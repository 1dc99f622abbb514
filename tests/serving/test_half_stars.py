"""Half-star ratings through ``POST /api/v1/profile/update``, stored on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from serving._state import ServiceState

UPDATE = "/api/v1/profile/update"


def _events(ids: list[str], stars: list[float]) -> list[dict[str, object]]:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return [
        {
            "content_id": ids[i],
            "timestamp": (t0 + timedelta(hours=i)).isoformat(),
            "completion_rate": 1.0,
            "rating": r,
        }
        for i, r in enumerate(stars)
    ]


def test_half_star_ratings_are_accepted_and_stored(
    db_client: TestClient, db_state: ServiceState, auth: Callable[..., dict[str, str]]
) -> None:
    ids = [str(c) for c in db_state.engine.catalog.ids]
    stars = [0.5, 1.5, 3.5, 4.5, 5.0]
    body = {"user_id": "halfstar", "viewing_events": _events(ids, stars)}
    r = db_client.post(UPDATE, json=body, headers=auth("halfstar"))
    assert r.status_code == 200, r.text
    assert r.json()["events_processed"] == len(stars)
    stored = db_state.storage.events_for_users(["halfstar"]).sort_values("timestamp")
    assert stored["rating"].tolist() == stars


@pytest.mark.parametrize("rating", [0, -1, 5.5, 10])
def test_ratings_off_the_scale_are_422_naming_the_field(
    client: TestClient, state: ServiceState, auth: Callable[..., dict[str, str]], rating: float
) -> None:
    ids = [str(c) for c in state.engine.catalog.ids]
    body = {"user_id": "offscale", "viewing_events": _events(ids, [4.5, rating])}
    r = client.post(UPDATE, json=body, headers=auth("offscale"))
    assert r.status_code == 422, r.text
    assert "rating" in r.text and "(0, 5]" in r.text
    assert state.storage.events_for_users(["offscale"]).empty
