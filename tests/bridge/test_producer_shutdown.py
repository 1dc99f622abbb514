"""What the producers do with events they cannot deliver: count them, never lose them silently."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

import pytest

from playback_bridge import (
    EventSink,
    InProcessEventBus,
    KafkaEventProducer,
    PositionUpdated,
    SessionCreated,
    SessionEnded,
    Topics,
    viewing_event_id,
)
from sona.storage import Storage

AnyEvent = SessionCreated | PositionUpdated | SessionEnded


def _position(i: int, *, user: str = "u1", session: str | None = None) -> PositionUpdated:
    return PositionUpdated(
        session_id=session or f"s{i}",
        user_id=user,
        content_id=f"c{i}",
        device_id="d",
        position_seconds=i,
        playback_state="playing",
        duration_seconds=100,
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_stop_with_the_broker_unreachable_counts_every_unsent_event_as_dropped() -> None:
    producer = KafkaEventProducer(
        [f"127.0.0.1:{_closed_port()}"], Topics("unreachable"), retry_backoff_seconds=0.05
    )
    await producer.start()
    for i in range(7):
        producer.publish(_position(i))
    await asyncio.sleep(0)  # let the send loop take a batch in flight
    await producer.stop(timeout=0.2)
    assert producer.stats.published == 7
    assert producer.stats.delivered == 0
    assert producer.stats.dropped == 7
    assert producer.pending == 0


class Blocked:
    """A sink that takes the first batch and never finishes writing it (a hung database)."""

    def __init__(self) -> None:
        self.taken: list[int] = []
        self._never = asyncio.Event()

    async def __call__(self, batch: Sequence[AnyEvent]) -> None:
        self.taken.append(len(batch))
        await self._never.wait()


async def test_stop_with_a_blocked_sink_counts_the_batch_in_flight_and_the_buffer() -> None:
    sink = Blocked()
    bus = InProcessEventBus(sink, max_batch=3)
    await bus.start()
    for i in range(3):
        bus.publish(_position(i))
    while not sink.taken:
        await asyncio.sleep(0)
    for i in range(3, 8):
        bus.publish(_position(i))
    assert sink.taken == [3] and bus.pending == 5
    await bus.stop(timeout=0.1)
    assert bus.stats.delivered == 0
    assert bus.stats.dropped == 8


@pytest.mark.postgres
async def test_an_event_storage_always_refuses_is_discarded_after_bounded_retries(postgres_url: str) -> None:
    storage = Storage(postgres_url)
    storage.upgrade()
    bus = InProcessEventBus(EventSink(storage), retry_backoff_seconds=0.01, max_attempts=3)
    await bus.start()
    # Built without validation, as an older producer could have: PostgreSQL refuses NUL in text,
    # so this event fails every time (psycopg DataError → sona.StorageError), and is not an outage.
    broken = PositionUpdated.model_construct(**{**_position(1).model_dump(), "user_id": "u\x00broken"})
    bus.publish(_position(0))
    bus.publish(broken)
    bus.publish(_position(2))
    await bus.flush(timeout=60)
    assert bus.stats.refused == 1
    assert bus.stats.delivered == 2 and bus.stats.dropped == 0
    bus.publish(_position(3))  # the bus still delivers
    await bus.flush(timeout=60)
    await bus.stop()
    stored = set(storage.events_for_users(None)["event_id"])
    assert stored == {viewing_event_id(f"s{i}") for i in (0, 2, 3)}
    storage.dispose()
