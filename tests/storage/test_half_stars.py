"""Half-star ratings (MovieLens releases since ml-10m) survive storage on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from sona import Storage, ValidationError, ViewingEvent

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STARS = [0.5, 1.5, 2.5, 3.5, 4.5, 5.0, None]


def test_half_star_records_and_frames_round_trip(storage: Storage) -> None:
    records = [
        ViewingEvent("u1", f"c{i}", T0 + timedelta(minutes=i), 1.0, rating=r, event_id=f"r{i}")
        for i, r in enumerate(STARS)
    ]
    frame = pd.DataFrame(
        {
            "event_id": [f"f{i}" for i in range(len(STARS))],
            "user_id": "u2",
            "content_id": [f"c{i}" for i in range(len(STARS))],
            "timestamp": [T0 + timedelta(minutes=i) for i in range(len(STARS))],
            "completion_rate": 1.0,
            "rating": [np.nan if r is None else r for r in STARS],
        }
    )
    storage.add_events(records)
    storage.add_events(frame)
    back = storage.events_for_users(["u1", "u2"]).sort_values(["user_id", "timestamp"])
    want = [np.nan if r is None else r for r in STARS] * 2
    np.testing.assert_array_equal(back["rating"].to_numpy(), np.array(want))


@pytest.mark.parametrize("rating", [0.0, -0.5, 5.5, 10.0, float("nan"), float("inf")])
def test_ratings_off_the_five_star_scale_are_rejected_before_storage(storage: Storage, rating: float) -> None:
    with pytest.raises(ValidationError) as info:
        storage.add_events([ViewingEvent("u1", "c1", T0, 1.0, rating=rating)])
    assert info.value.field == "rating"
    assert storage.events_for_users(["u1"]).empty
