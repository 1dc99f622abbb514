"""Message contract and the event sink (coalescing, idempotency, training queue) on real storage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from playback_bridge import (
    EventSink,
    PlaybackBatch,
    PoisonMessageError,
    PositionUpdated,
    SessionCreated,
    SessionEnded,
    SyncProgress,
    completion_rate,
    decode_batch,
    decode_event,
    encode_event,
    viewing_event_id,
)
from sona import Sona
from sona.storage import Storage
from tests.bridge.conftest import weak_genre_titles

T0 = datetime(2026, 1, 1, 20, 0, tzinfo=UTC)


def ended(sid: str, user: str, content: str, pos: float, dur: float = 100.0) -> SessionEnded:
    return SessionEnded(
        session_id=sid,
        user_id=user,
        content_id=content,
        device_id="d",
        final_position_seconds=pos,
        completion_rate=completion_rate(pos, dur),
        duration_seconds=dur,
        timestamp=T0,
    )


def update(sid: str, user: str, content: str, pos: float, state: str = "playing") -> PositionUpdated:
    return PositionUpdated(
        session_id=sid,
        user_id=user,
        content_id=content,
        device_id="d",
        position_seconds=pos,
        playback_state=state,
        duration_seconds=100.0,
        timestamp=T0,
    )


def test_events_round_trip_with_lowercase_enums_and_reject_poison() -> None:
    created = SessionCreated(session_id="s", user_id="u", content_id="c", device_id="d", duration_seconds=5)
    payload = json.loads(encode_event(created))
    assert payload["quality"] == "auto" and payload["event_type"] == "session-created"
    assert decode_event(encode_event(created)) == created
    assert completion_rate(150, 100) == 1.0 and completion_rate(5, 0) == 0.0
    with pytest.raises(PoisonMessageError, match="bad JSON"):
        decode_event(b"\xff{")
    with pytest.raises(PoisonMessageError, match="schema_version"):
        decode_event(json.dumps({**payload, "schema_version": 2}).encode())
    with pytest.raises(PoisonMessageError, match="user_id"):
        decode_event(json.dumps({**payload, "user_id": "  "}).encode())
    with pytest.raises(PoisonMessageError, match="event_type"):
        decode_event(json.dumps({**payload, "event_type": "rewound"}).encode())
    assert set(SyncProgress.model_fields) == {
        "user_id",
        "content_id",
        "device_id",
        "position_seconds",
        "duration_seconds",
        "state",
        "timestamp",
    }


def _stored(storage: Storage) -> dict[str, tuple[str, str, float, float]]:
    frame = storage.events_for_users(None)
    return {
        r.event_id: (r.user_id, r.content_id, round(r.completion_rate, 6), r.watch_seconds)
        for r in frame.itertuples()
    }


def test_sink_writes_progress_coalesced_once_per_batch_and_is_idempotent(database_url: str) -> None:
    storage = Storage(database_url)
    storage.upgrade()
    sink = EventSink(storage)
    first = [
        update("s1", "u1", "c1", 40),
        update("s1", "u1", "c1", 60),  # furthest in the batch: the one written
        update("s1", "u1", "c1", 50),
        update("s2", "u2", "c1", 10),  # never closed: its progress is still a viewing event
        ended("s3", "u2", "c2", 100),
    ]
    result = sink.handle(first)
    assert (result.received, result.sessions, result.inserted, result.advanced, result.final) == (
        5,
        3,
        3,
        0,
        1,
    )
    assert sorted(result.users) == ["u1", "u2"]
    expected = {
        viewing_event_id("s1"): ("u1", "c1", 0.6, 60.0),
        viewing_event_id("s2"): ("u2", "c1", 0.1, 10.0),
        viewing_event_id("s3"): ("u2", "c2", 1.0, 100.0),
    }
    assert _stored(storage) == expected

    second = [
        ended("s1", "u1", "c1", 55),  # ended behind its furthest position: the furthest stays
        update("s2", "u2", "c1", 70),  # moved on: the row advances
        update("s2", "u2", "c1", 70, state="ended"),
    ]
    result = sink.handle(second)
    assert (result.sessions, result.inserted, result.advanced, result.unchanged, result.final) == (
        2,
        0,
        1,
        1,
        2,
    )
    assert result.users == ("u2",)
    expected[viewing_event_id("s2")] = ("u2", "c1", 0.7, 70.0)
    assert _stored(storage) == expected

    again = sink.handle(first + second)  # a replay after a crash
    assert (again.inserted, again.advanced, again.unchanged, again.users) == (0, 0, 3, ())
    assert _stored(storage) == expected
    storage.dispose()


def test_decode_batch_matches_the_models_and_their_poison_reasons() -> None:
    good = [update("s1", "u1", "c1", 5), ended("s1", "u1", "c1", 50), update("s2", "u2", "c1", 100, "ended")]
    created = SessionCreated(session_id="s", user_id="u", content_id="c", device_id="d", duration_seconds=5)
    payload = json.loads(encode_event(good[0]))
    lax = json.dumps({**payload, "position_seconds": "7"}).encode()  # the model accepts a numeric string
    poison = [
        None,
        b"{nope",
        b"[1]",
        json.dumps({**payload, "schema_version": 3}).encode(),
        json.dumps({**payload, "user_id": " "}).encode(),
        json.dumps({**payload, "position_seconds": float("nan")}).encode(),
        json.dumps({**payload, "timestamp": "2026-01-01T00:00:00"}).encode(),
        json.dumps({**payload, "playback_state": "rewinding"}).encode(),
    ]
    values = [encode_event(e) for e in good] + [encode_event(created), lax, *poison]
    batch, bad = decode_batch(values)
    reasons = {}
    for i, value in enumerate(values):
        try:
            decode_event(value)
        except PoisonMessageError as exc:
            reasons[i] = exc.reason
    assert dict(bad) == reasons and len(reasons) == len(poison)
    expected = PlaybackBatch.from_events([*good, created, decode_event(lax)])
    assert list(batch.frame.index) == [0, 1, 2, 4]  # positions in the input; session-created is left out
    assert batch.frame.reset_index(drop=True).equals(expected.frame.reset_index(drop=True))
    assert list(batch.frame["final"]) == [False, True, True, False]


def test_sink_updates_profiles_as_sessions_progress(sqlite_url: str, engine_dir: Path) -> None:
    storage = Storage(sqlite_url)
    storage.upgrade()
    engine = Sona.load(engine_dir)
    before = engine.profile("u0")
    genre, (t1, t2) = weak_genre_titles(engine, "u0")
    sink = EventSink(storage, engine)

    progress = sink.handle([update("p1", "u0", t1, 50), update("p2", "new-user", t1, 90)])
    assert set(progress.profiles) == {"u0", "new-user"}  # still playing, already in the profiles
    first = storage.load_profile("u0")
    assert first is not None and first.interaction_count == before.interaction_count + 1
    assert first.genre_affinities[genre] > before.genre_affinities[genre]

    batch = [update("p1", "u0", t1, 90), ended("p1", "u0", t1, 80), ended("p9", "u0", "not-a-title", 90)]
    ended_ = sink.handle(batch)
    assert ended_.profiles == ("u0",) and ended_.advanced == 1
    saved = storage.load_profile("u0")
    assert saved is not None
    assert saved.interaction_count == before.interaction_count + 1  # the same session, further along
    assert saved.genre_affinities[genre] > first.genre_affinities[genre]
    assert not np.allclose(saved.preference_vector, first.preference_vector)
    row = engine.user_history("u0").set_index("event_id").loc[viewing_event_id("p1")]
    assert row["completion_rate"] == pytest.approx(0.9)

    # A replay changes nothing.
    sink.handle(batch)
    again = storage.load_profile("u0")
    assert again is not None and again.interaction_count == saved.interaction_count
    np.testing.assert_array_equal(again.preference_vector, saved.preference_vector)

    # A restarted consumer (engine from disk, new sink) starts from the user's stored history.
    restarted_engine = Sona.load(engine_dir)
    restarted = EventSink(storage, restarted_engine)
    restarted.handle([ended("p3", "u0", t2, 100)])
    after = storage.load_profile("u0")
    assert after is not None and after.interaction_count == before.interaction_count + 2
    assert after.genre_affinities[genre] > saved.genre_affinities[genre]
    history = restarted_engine.user_history("u0").set_index("event_id")
    assert history.loc[viewing_event_id("p1"), "completion_rate"] == pytest.approx(0.9)
    storage.dispose()


def test_users_crossing_the_threshold_are_queued_once(sqlite_url: str) -> None:
    storage = Storage(sqlite_url)
    storage.upgrade()
    sink = EventSink(storage, min_events=10, min_interval=timedelta(hours=1))
    first = sink.handle([ended(f"a{i}", "u1", f"c{i}", 90) for i in range(9)] + [ended("b0", "u2", "c0", 90)])
    assert first.queued_for_training == () and storage.list_jobs() == []
    low = sink.handle([ended("a-low", "u1", "c-low", 10)])  # completion 0.1: does not qualify
    assert low.queued_for_training == ()
    second = sink.handle([ended("a9", "u1", "c9", 90), ended("a10", "u1", "c10", 90)])
    assert second.queued_for_training == ("u1",)
    assert sink.handle([ended("a11", "u1", "c11", 90)]).queued_for_training == ()  # already queued
    # Queued in the database, where every serving worker claims training jobs.
    (job,) = storage.list_jobs()
    assert (job.user_id, job.status) == ("u1", "queued") and "u1" in sink.training_queue
    # Another consumer process (its own sink) cannot queue the user a second time.
    other = EventSink(Storage(sqlite_url), min_events=10, min_interval=timedelta(hours=1))
    assert other.handle([ended("a13", "u1", "c13", 90)]).queued_for_training == ()
    other.storage.dispose()
    storage.update_job(job.job_id, status="skipped")

    # Trained a minute ago: the minimum interval keeps the user off the queue.
    storage.record_adapter(
        "u1", 1, rank=4, size_bytes=1, location="x", created_at=datetime.now(UTC) - timedelta(minutes=1)
    )
    assert sink.handle([ended("a12", "u1", "c12", 90)]).queued_for_training == ()
    fresh = EventSink(storage, min_events=10, min_interval=timedelta(seconds=1))
    storage.record_adapter("u3", 1, rank=4, size_bytes=1, location="x", created_at=T0)
    fresh_result = fresh.handle([ended(f"x{i}", "u3", f"c{i}", 90) for i in range(10)])
    assert fresh_result.queued_for_training == ("u3",)
    storage.dispose()


def test_sink_keeps_at_most_max_cached_users_in_its_engine_and_reads_a_forgotten_one_back(
    sqlite_url: str, engine_dir: Path
) -> None:
    """A long-running consumer's engine stays bounded; a forgotten user's next batch starts from storage."""
    storage = Storage(sqlite_url)
    storage.upgrade()
    engine = Sona.load(engine_dir)
    _, (t1, t2) = weak_genre_titles(engine, "u0")
    sink = EventSink(storage, engine, max_cached_users=2)
    sink.handle([ended("n1", "new-1", t1, 90)])
    sink.handle([ended("n2", "new-2", t1, 90)])
    assert engine.known_user("new-1") and engine.known_user("new-2")
    sink.handle([ended("n3", "new-3", t1, 90)])  # a third user: the least recently seen leaves the engine
    assert not engine.known_user("new-1") and engine.known_user("new-3")
    sink.handle([ended("n4", "new-1", t2, 90)])  # back: its stored history is read again, not just this event
    history = engine.user_history("new-1")
    assert set(history["event_id"]) == {viewing_event_id("n1"), viewing_event_id("n4")}
    saved = storage.load_profile("new-1")
    assert saved is not None and saved.interaction_count == 2
    storage.dispose()
