"""Message contract and the event sink (coalescing, idempotency, training queue) on real storage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from playback_bridge import (
    EventSink,
    PoisonMessageError,
    PositionUpdated,
    SessionCreated,
    SessionEnded,
    SyncProgress,
    completion_rate,
    decode_event,
    encode_event,
    viewing_event_id,
)
from sona.storage import Storage

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


def test_sink_coalesces_final_observations_and_is_idempotent(database_url: str) -> None:
    storage = Storage(database_url)
    storage.upgrade()
    sink = EventSink(storage)
    batch = [
        update("s1", "u1", "c1", 40),  # not final: skipped
        ended("s1", "u1", "c1", 30),
        ended("s2", "u1", "c1", 80),  # same user and title, further: wins
        update("s3", "u2", "c1", 100, state="ended"),  # reached the end: final
        update("s4", "u2", "c2", 10),
    ]
    result = sink.handle(batch)
    assert (result.received, result.final, result.inserted, result.skipped) == (5, 2, 2, 3)
    frame = storage.events_for_users(None)
    got = {(r.event_id, r.user_id, r.content_id, r.completion_rate, r.source) for r in frame.itertuples()}
    assert got == {
        (viewing_event_id("s2"), "u1", "c1", 0.8, "playback"),
        (viewing_event_id("s3"), "u2", "c1", 1.0, "playback"),
    }
    again = sink.handle(batch)  # a replay after a crash
    assert (again.inserted, again.duplicates) == (0, 2)
    assert len(storage.events_for_users(None)) == 2
    storage.dispose()


def test_users_crossing_the_threshold_are_queued_once(sqlite_url: str) -> None:
    storage = Storage(sqlite_url)
    storage.upgrade()
    sink = EventSink(storage, min_events=10, min_interval=timedelta(hours=1))
    first = sink.handle([ended(f"a{i}", "u1", f"c{i}", 90) for i in range(9)] + [ended("b0", "u2", "c0", 90)])
    assert first.queued_for_training == () and len(sink.training_queue) == 0
    low = sink.handle([ended("a-low", "u1", "c-low", 10)])  # completion 0.1: does not qualify
    assert low.queued_for_training == ()
    second = sink.handle([ended("a9", "u1", "c9", 90), ended("a10", "u1", "c10", 90)])
    assert second.queued_for_training == ("u1",)
    assert sink.handle([ended("a11", "u1", "c11", 90)]).queued_for_training == ()  # already queued
    assert sink.training_queue.drain() == ["u1"]

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
