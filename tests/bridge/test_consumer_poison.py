"""Messages nobody foresaw, and rows storage never accepts, must not stop a partition.

Against the real broker and database: malformed messages are dead-lettered
among good ones, the good ones are stored, the offsets committed, and the
consumer keeps consuming.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from playback_bridge import (
    EventSink,
    EventType,
    PlaybackBatch,
    PositionUpdated,
    SessionEnded,
    Topics,
    encode_event,
    ensure_topics,
    viewing_event_id,
)
from playback_bridge.consumer import BatchHandler, PlaybackConsumer
from sona import DataError
from sona.storage import Storage
from tests.bridge.conftest import FAST_GROUP, until

pytestmark = [pytest.mark.kafka]


def _update(sid: str, user: str = "u1") -> dict[str, object]:
    event = PositionUpdated(
        session_id=sid,
        user_id=user,
        content_id=f"c-{sid}",
        device_id="d",
        position_seconds=30,
        playback_state="playing",
        duration_seconds=100,
    )
    return dict(json.loads(encode_event(event)))


async def _send(brokers: list[str], topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=brokers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=b"u1")
    finally:
        await producer.stop()


async def _dead_letters(brokers: list[str], topics: Topics) -> list[dict[str, object]]:
    dlq = AIOKafkaConsumer(topics.dead_letter, bootstrap_servers=brokers, auto_offset_reset="earliest")
    await dlq.start()
    try:
        got = await dlq.getmany(timeout_ms=3000)
    finally:
        await dlq.stop()
    return [json.loads(r.value) for records in got.values() for r in records]


def _stored(storage: Storage) -> set[str]:
    return set(storage.events_for_users(None)["event_id"])


async def _ensure(brokers: list[str], topics: Topics) -> None:
    await ensure_topics(brokers, topics.all, partitions=1)


@dataclass(frozen=True, slots=True)
class Bus:
    brokers: list[str]
    topics: Topics
    storage: Storage


@pytest.fixture
async def bus(sqlite_url: str, kafka_brokers: str, topic_prefix: str) -> AsyncIterator[Bus]:
    """Single-partition topics of their own on the real broker, and a migrated SQLite store."""
    brokers, topics = kafka_brokers.split(","), Topics(topic_prefix)
    storage = Storage(sqlite_url)
    storage.upgrade()
    await _ensure(brokers, topics)
    yield Bus(brokers, topics, storage)
    storage.dispose()


async def test_malformed_messages_are_dead_lettered_and_the_partition_keeps_moving(
    database_url: str, kafka_brokers: str, topic_prefix: str
) -> None:
    brokers = kafka_brokers.split(",")
    topics = Topics(topic_prefix)
    storage = Storage(database_url)
    storage.upgrade()
    topic = topics.for_type(EventType.POSITION_UPDATED)
    good = _update("s-good-1")
    bad = {
        "event_type as a list": {**good, "event_type": ["position-updated"]},
        "playback_state as an object": {**good, "playback_state": {"x": 1}},
        "year 9999": {**good, "timestamp": "9999-01-01T00:00:00Z"},
        "year 1500": {**good, "timestamp": "1500-01-01T00:00:00Z"},
        "a NUL in an id": {**good, "session_id": "s\x00nul"},
        "a control character in an id": {**good, "user_id": "u\x1b1"},
    }
    values = [
        json.dumps(good).encode(),
        *(json.dumps(doc).encode() for doc in bad.values()),
        json.dumps(_update("s-good-2")).encode(),
    ]
    await _ensure(brokers, topics)
    await _send(brokers, topic, values)
    # Every id of a message a list: the column-wise id check itself used to raise.
    ids = ("session_id", "user_id", "content_id", "device_id")
    ids_as_lists = [
        json.dumps({**_update(f"s-l{i}"), **{k: [f"x{i}"] for k in ids}}).encode() for i in range(2)
    ]

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = PlaybackConsumer(
        brokers, topics, EventSink(storage), group_id=group, partitions=1, **FAST_GROUP
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        first = {viewing_event_id("s-good-1"), viewing_event_id("s-good-2")}
        await until(
            lambda: task.done() or (consumer.stats.dead_letters == len(bad) and _stored(storage) == first)
        )
        assert not task.done()

        # A batch made only of bad messages, then a good one: still consuming.
        await _send(brokers, topic, [*ids_as_lists, json.dumps(_update("s-good-3")).encode()])
        await until(
            lambda: (
                task.done()
                or (
                    consumer.stats.dead_letters == len(bad) + 2
                    and viewing_event_id("s-good-3") in _stored(storage)
                )
            )
        )
        assert not task.done()
        consumer.request_stop()
        await task
    finally:
        await consumer.stop()

    letters = await _dead_letters(brokers, topics)
    assert len(letters) == len(bad) + 2
    assert {letter["value"] for letter in letters} == {v.decode() for v in [*values[1:-1], *ids_as_lists]}
    assert all(
        str(letter["reason"]).startswith(("invalid value", "unknown event_type")) for letter in letters
    )

    # Committed: the same group, started again, has nothing left to read.
    again = PlaybackConsumer(brokers, topics, EventSink(storage), group_id=group, partitions=1, **FAST_GROUP)
    await again.start()
    try:
        await asyncio.wait_for(again.run(max_idle_seconds=1.5), 30)
    finally:
        await again.stop()
    assert again.stats.messages == 0
    storage.dispose()


async def _drain(
    brokers: list[str], topics: Topics, handler: BatchHandler, *, max_attempts: int
) -> PlaybackConsumer:
    """Consume with fast retries until idle for 1.5 s, then stop; returns the consumer for its stats."""
    consumer = PlaybackConsumer(
        brokers,
        topics,
        handler,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        partitions=1,
        retry_backoff_seconds=0.01,
        max_attempts=max_attempts,
        **FAST_GROUP,
    )
    await consumer.start()
    try:
        await asyncio.wait_for(consumer.run(max_idle_seconds=1.5), 60)
    finally:
        await consumer.stop()
    return consumer


class RefusesSession:
    """A batch handler in front of the real sink that always fails on one session, as a broken row would.

    Its error is not ``sona.DataError`` and not an outage: before the retry
    bound, such a batch was retried forever and its partition never moved.
    """

    def __init__(self, sink: EventSink, session_id: str) -> None:
        self.sink = sink
        self.session_id = session_id
        self.calls = 0

    async def __call__(self, batch: PlaybackBatch) -> object:
        self.calls += 1
        if (batch.frame["session_id"] == self.session_id).any():
            raise RuntimeError(f"cannot store session {self.session_id}")
        return await self.sink(batch)


class FailsThenRecovers:
    """A handler whose store is unreachable for the first ``outage`` calls (a refused connection)."""

    def __init__(self, sink: EventSink, outage: int) -> None:
        self.sink = sink
        self.outage = outage
        self.calls = 0

    async def __call__(self, batch: PlaybackBatch) -> object:
        self.calls += 1
        if self.calls <= self.outage:
            raise ConnectionRefusedError("database unreachable")
        return await self.sink(batch)


async def test_a_row_that_always_fails_is_dead_lettered_after_bounded_retries(bus: Bus) -> None:
    brokers, topics, storage = bus.brokers, bus.topics, bus.storage
    values = [json.dumps(_update(sid)).encode() for sid in ("s-a", "s-stuck", "s-b")]
    await _send(brokers, topics.for_type(EventType.POSITION_UPDATED), values)

    handler = RefusesSession(EventSink(storage), "s-stuck")
    consumer = await _drain(brokers, topics, handler, max_attempts=3)
    assert _stored(storage) == {viewing_event_id("s-a"), viewing_event_id("s-b")}
    assert consumer.stats.handler_refused == 1 and consumer.stats.dead_letters == 1
    assert consumer.stats.commits >= 1
    letters = await _dead_letters(brokers, topics)
    assert [letter["value"] for letter in letters] == [values[1].decode()]
    assert "RuntimeError: cannot store session s-stuck" in str(letters[0]["reason"])


class InvalidAndFlaky:
    """In front of the real sink: one session is invalid data (``DataError``, as the sink says of a
    bad row), another fails once with an error that is neither, then stores fine."""

    def __init__(self, sink: EventSink, invalid: str, flaky: str) -> None:
        self.sink, self.invalid, self.flaky = sink, invalid, flaky
        self.flaky_failed = False

    async def __call__(self, batch: PlaybackBatch) -> object:
        sessions = set(batch.frame["session_id"])
        if self.invalid in sessions:
            raise DataError(f"session {self.invalid} is not a valid viewing event")
        if self.flaky in sessions and not self.flaky_failed:
            self.flaky_failed = True
            raise RuntimeError("one-off failure")
        return await self.sink(batch)


async def test_a_one_off_failure_after_a_data_error_split_is_retried_not_dead_lettered(bus: Bus) -> None:
    brokers, topics, storage = bus.brokers, bus.topics, bus.storage
    sids = ("s-a", "s-once", "s-bad", "s-b")
    values = [json.dumps(_update(sid)).encode() for sid in sids]
    await _send(brokers, topics.for_type(EventType.POSITION_UPDATED), values)

    consumer = await _drain(
        brokers, topics, InvalidAndFlaky(EventSink(storage), invalid="s-bad", flaky="s-once"), max_attempts=3
    )
    assert _stored(storage) == {viewing_event_id(s) for s in ("s-a", "s-once", "s-b")}
    letters = await _dead_letters(brokers, topics)
    assert [letter["value"] for letter in letters] == [values[2].decode()]
    assert consumer.stats.handler_refused == 0


async def test_an_outage_is_retried_beyond_the_bound_and_nothing_is_dead_lettered(bus: Bus) -> None:
    brokers, topics, storage = bus.brokers, bus.topics, bus.storage
    ended = SessionEnded(
        session_id="s-end",
        user_id="u1",
        content_id="c1",
        device_id="d",
        final_position_seconds=50,
        completion_rate=0.5,
        duration_seconds=100,
    )
    await _send(brokers, topics.for_type(EventType.SESSION_ENDED), [encode_event(ended)])

    handler = FailsThenRecovers(EventSink(storage), outage=6)
    consumer = await _drain(brokers, topics, handler, max_attempts=2)
    assert handler.calls == 7
    assert consumer.stats.handler_retries == 6
    assert consumer.stats.dead_letters == consumer.stats.handler_refused == 0
    assert _stored(storage) == {viewing_event_id("s-end")}


async def test_a_failed_start_stops_what_it_started(kafka_brokers: str, topic_prefix: str) -> None:
    # A negative session timeout: the broker never lets this member join, so start() hangs in the
    # group join after the dead-letter producer is up, and is cancelled.
    brokers = kafka_brokers.split(",")
    topics = Topics(topic_prefix)
    await _ensure(brokers, topics)
    before = asyncio.all_tasks()

    async def handler(batch: PlaybackBatch) -> None:
        return None

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = PlaybackConsumer(brokers, topics, handler, group_id=group, partitions=1, session_timeout_ms=-1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consumer.start(), 5)
    await asyncio.sleep(0)
    leftover = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()}
    assert leftover == set(), leftover
    await consumer.stop()
