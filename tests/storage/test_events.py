"""Viewing events: idempotent bulk writes, all-or-nothing validation, DataFrame reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from sona import (
    EVENT_COLUMNS,
    DataError,
    Storage,
    StorageError,
    UserProfile,
    ValidationError,
    ViewingEvent,
    validate_events,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _event(i: int, user: str = "u1", **kw: object) -> ViewingEvent:
    fields: dict[str, object] = {
        "user_id": user,
        "content_id": f"c{i % 7}",
        "timestamp": T0 + timedelta(minutes=i),
        "completion_rate": 0.8,
        "event_id": f"e{user}-{i}",
    }
    fields.update(kw)
    return ViewingEvent(**fields)  # type: ignore[arg-type]


def _frame(n: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    return pd.DataFrame(
        {
            "event_id": [f"f{i}" for i in range(start, start + n)],
            "user_id": [f"u{i % 13}" for i in range(start, start + n)],
            "content_id": [f"c{i % 50}" for i in range(start, start + n)],
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.arange(start, start + n), "s"),
            "completion_rate": rng.random(n),
            "rating": np.where(rng.random(n) < 0.5, np.nan, rng.integers(1, 6, n)),
            "dismissed": rng.random(n) < 0.1,
        }
    )


def _count(storage: Storage) -> int:
    return len(storage.events_for_users())


def test_duplicates_are_ignored_within_and_across_batches(storage: Storage) -> None:
    batch = [_event(0), _event(1), _event(0), _event(2)]  # e-u1-0 twice in the batch
    first = storage.add_events(batch)
    assert (first.inserted, first.duplicates) == (3, 1)
    assert first.inserted_event_ids == ("eu1-0", "eu1-1", "eu1-2")

    second = storage.add_events([_event(2), _event(3)])  # e-u1-2 already stored
    assert (second.inserted, second.duplicates) == (1, 1)
    assert second.inserted_event_ids == ("eu1-3",)
    assert sorted(storage.events_for_users(["u1"])["event_id"]) == ["eu1-0", "eu1-1", "eu1-2", "eu1-3"]


def test_bulk_dataframe_batches_are_idempotent(storage: Storage) -> None:
    """Large batches (the PostgreSQL COPY path) dedupe like small ones."""
    first = storage.add_events(_frame(1200))
    assert (first.inserted, first.duplicates) == (1200, 0)
    overlap = pd.concat([_frame(600, start=900), _frame(10, start=1495)])  # 300 old, 5 repeated in batch
    second = storage.add_events(overlap)
    assert (second.inserted, second.duplicates) == (305, 305)
    stored = storage.events_for_users()
    assert len(stored) == 1505
    assert stored["event_id"].is_unique


def test_round_trip_keeps_values_columns_and_dtypes(storage: Storage) -> None:
    frame = validate_events(_frame(40))
    storage.add_events(frame)
    back = storage.events_for_users()
    assert list(back.columns) == list(EVENT_COLUMNS)
    assert back.dtypes.to_dict() == frame.dtypes.to_dict()
    pd.testing.assert_frame_equal(
        back.sort_values("event_id", ignore_index=True), frame.sort_values("event_id", ignore_index=True)
    )
    assert back["timestamp"].is_monotonic_increasing


def test_filters_by_user_and_since(storage: Storage) -> None:
    storage.add_events([_event(i, "a") for i in range(5)] + [_event(i, "b") for i in range(3)])
    assert set(storage.events_for_users(["b"])["user_id"]) == {"b"}
    assert len(storage.events_for_users("a")) == 5  # one id is accepted too
    recent = storage.events_for_users(["a", "b"], since=T0 + timedelta(minutes=3))
    assert sorted(recent["event_id"]) == ["ea-3", "ea-4"]
    assert storage.events_for_users(["nobody"]).empty
    assert storage.users_with_events_since(T0 + timedelta(minutes=3)) == ["a"]
    assert storage.users_with_events_since(T0) == ["a", "b"]


def test_count_qualifying_events(storage: Storage) -> None:
    storage.add_events(
        [_event(0, completion_rate=0.9), _event(1, completion_rate=0.3), _event(2, completion_rate=0.1)]
        + [_event(3, completion_rate=0.95, dismissed=True), _event(4, "other")]
    )
    assert storage.count_qualifying_events("u1") == 2
    assert storage.count_qualifying_events("u1", min_completion=0.5) == 1
    assert storage.count_qualifying_events("nobody") == 0
    assert storage.qualifying_event_counts(["u1", "other", "nobody"]) == {"u1": 2, "other": 1, "nobody": 0}
    assert storage.qualifying_event_counts(["u1"], min_completion=0.5) == {"u1": 1}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"rating": 7}, "rating"),
        ({"completion_rate": -0.1}, "completion_rate"),
        ({"timestamp": datetime(2026, 3, 1, 12, 0)}, "timestamp"),  # naive
        ({"content_id": None}, "content_id"),  # missing
        ({"colour": "red"}, "colour"),  # unknown field
    ],
)
def test_one_invalid_record_rejects_the_whole_batch(
    storage: Storage, bad: dict[str, object], field: str
) -> None:
    storage.add_events([_event(100)])
    good = [_event(i).to_dict() for i in range(4)]
    good[2] = {**good[2], **bad}
    with pytest.raises(ValidationError) as info:
        storage.add_events(good)
    assert (info.value.field, info.value.index) == (field, 2)
    assert f"event[2].{field}" in str(info.value)
    assert _count(storage) == 1


def test_invalid_dataframe_rejects_the_whole_batch(storage: Storage) -> None:
    frame = _frame(30)
    frame.loc[17, "rating"] = 7
    with pytest.raises(ValidationError) as info:
        storage.add_events(frame)
    assert (info.value.field, info.value.index) == ("rating", 17)
    with pytest.raises(ValidationError, match="completion_rate"):
        storage.add_events(frame.drop(columns="completion_rate"))
    with pytest.raises(DataError):
        storage.add_events("not events")  # type: ignore[arg-type]
    assert _count(storage) == 0


def test_events_and_profiles_are_written_together_or_not_at_all(storage: Storage) -> None:
    profile = UserProfile("u1", np.ones(4, dtype=np.float32), interaction_count=3)
    broken = UserProfile("u2", np.array([np.nan], dtype=np.float32))
    with pytest.raises(ValidationError, match="preference_vector"):
        storage.add_events([_event(0)], profiles=[profile, broken])
    assert _count(storage) == 0
    assert storage.load_profiles() == {}

    storage.add_events([_event(0)], profiles=[profile])
    assert _count(storage) == 1
    assert storage.load_profile("u1") is not None


def test_transaction_rolls_back_every_write_on_error(storage: Storage) -> None:
    with pytest.raises(RuntimeError), storage.transaction() as tx:
        tx.add_events(_frame(600))
        tx.save_profiles([UserProfile("u1", np.zeros(2, dtype=np.float32))])
        raise RuntimeError("crash before commit")
    assert _count(storage) == 0
    assert storage.load_profiles() == {}

    with storage.transaction() as tx:
        assert tx.add_events([_event(0)]).inserted == 1
        assert tx.add_events([_event(0)]).duplicates == 1  # sees its own uncommitted write
    assert _count(storage) == 1


def test_timestamps_come_back_as_utc(storage: Storage) -> None:
    tokyo = timezone(timedelta(hours=9))
    storage.add_events([_event(0, timestamp=datetime(2026, 3, 1, 21, 30, tzinfo=tokyo))])
    ts = storage.events_for_users()["timestamp"].iloc[0]
    assert str(ts.tz) == "UTC"
    assert ts == pd.Timestamp("2026-03-01 12:30", tz="UTC")
    with pytest.raises(ValidationError, match="since"):
        storage.events_for_users(since=datetime(2026, 1, 1))


def test_database_failure_is_a_storage_error(storage: Storage) -> None:
    engine = sa.create_engine(storage.url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE viewing_events"))
    engine.dispose()
    with pytest.raises(StorageError, match="storing events failed"):
        storage.add_events([_event(0)])


def test_concurrent_writers_do_not_fail_or_lose_events(storage: Storage) -> None:
    """Request handlers, the job worker and the consumer write from different threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    def work(worker: int) -> int:
        job = storage.create_job(f"w{worker}")
        inserted = 0
        for b in range(10):
            batch = [_event(b * 5 + i, user=f"w{worker}") for i in range(5)]
            inserted += storage.add_events(batch + batch[:2]).inserted
            storage.update_job(job.job_id, status="running", events_used=inserted)
        storage.update_job(job.job_id, status="succeeded")
        return inserted

    with ThreadPoolExecutor(4) as pool:
        totals = list(pool.map(work, range(4)))
    assert totals == [50] * 4
    assert _count(storage) == 200
    assert {j.status for j in storage.list_jobs()} == {"succeeded"}


def _progress(session: int, completion: float, minute: int, user: str = "u1") -> ViewingEvent:
    return _event(
        session,
        user,
        event_id=f"s{session}",
        completion_rate=completion,
        watch_seconds=completion * 3600,
        timestamp=T0 + timedelta(minutes=minute),
    )


def _stored(storage: Storage) -> dict[str, tuple[float, float, datetime]]:
    frame = storage.events_for_users()
    return {
        r.event_id: (r.completion_rate, r.watch_seconds, r.timestamp.to_pydatetime())
        for r in frame.itertuples(index=False)
    }


def test_max_progress_advances_only_further_observations(storage: Storage) -> None:
    first = storage.add_events(
        [_progress(0, 0.2, 1), _progress(0, 0.4, 2), _progress(0, 0.3, 3), _progress(1, 0.5, 1)],
        on_conflict="max_progress",
    )
    assert (first.inserted, first.advanced, first.duplicates) == (2, 0, 2)
    assert first.inserted_event_ids == ("s0", "s1")  # s0 at its furthest record of the batch
    assert _stored(storage)["s0"] == (0.4, 0.4 * 3600, T0 + timedelta(minutes=2))

    second = storage.add_events(
        [_progress(0, 0.9, 10), _progress(1, 0.5, 11), _progress(1, 0.1, 12), _progress(2, 0.05, 12)],
        on_conflict="max_progress",
    )
    assert (second.inserted, second.advanced, second.duplicates) == (1, 1, 2)
    assert (second.inserted_event_ids, second.advanced_event_ids) == (("s2",), ("s0",))
    stored = _stored(storage)
    assert stored["s0"] == (0.9, 0.9 * 3600, T0 + timedelta(minutes=10))  # timestamp of that observation
    assert stored["s1"] == (0.5, 0.5 * 3600, T0 + timedelta(minutes=1))  # equal or lower: unchanged

    # Same completion, more watch time (a capped completion) still advances; a replay writes nothing.
    tie = _event(1, event_id="s1", completion_rate=0.5, watch_seconds=2000.0, timestamp=T0)
    assert storage.add_events([tie], on_conflict="max_progress").advanced_event_ids == ("s1",)
    replay = storage.add_events([_progress(0, 0.9, 10), tie], on_conflict="max_progress")
    assert (replay.inserted, replay.advanced, replay.duplicates) == (0, 0, 2)
    assert len(storage.events_for_users()) == 3

    # The default mode still keeps the first stored row.
    ignored = storage.add_events([_progress(2, 1.0, 20)])
    assert (ignored.inserted, ignored.advanced, ignored.duplicates) == (0, 0, 1)
    assert _stored(storage)["s2"][0] == 0.05
    with pytest.raises(ValidationError, match="on_conflict"):
        storage.add_events([tie], on_conflict="replace")  # type: ignore[arg-type]


def test_max_progress_bulk_batches_dedupe_and_advance(storage: Storage) -> None:
    """Large batches (the PostgreSQL COPY path) classify rows like small ones."""
    n = 1200
    base = _frame(n).assign(watch_seconds=0.0, completion_rate=0.5)
    assert storage.add_events(base, on_conflict="max_progress").inserted == n
    later = pd.concat([base.iloc[:600], base.iloc[:600]]).reset_index(drop=True)  # 600 ids, twice each
    later["completion_rate"] = np.r_[
        np.full(300, 0.9), np.full(300, 0.4), np.full(300, 0.1), np.full(300, 0.95)
    ]
    later = pd.concat([later, _frame(5, start=n).assign(completion_rate=0.7)], ignore_index=True)
    result = storage.add_events(later, on_conflict="max_progress")
    assert (result.inserted, result.advanced, result.duplicates) == (5, 600, 600)
    stored = storage.events_for_users().set_index("event_id")["completion_rate"]
    assert len(stored) == n + 5
    assert (stored.iloc[:300] == 0.9).all() and (stored.iloc[300:600] == 0.95).all()
    assert (stored.iloc[600:n] == 0.5).all()
    again = storage.add_events(later, on_conflict="max_progress")
    assert (again.inserted, again.advanced) == (0, 0)
