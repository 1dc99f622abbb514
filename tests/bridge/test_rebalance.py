"""Two consumers in one group: the second joining rebalances, the first flushes and commits on revoke."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer

from playback_bridge import (
    EventSink,
    PlaybackBatch,
    PositionUpdated,
    SessionEnded,
    Topics,
    encode_event,
    ensure_topics,
    viewing_event_id,
)
from playback_bridge.consumer import PlaybackConsumer
from sona.storage import Storage

pytestmark = [pytest.mark.kafka]

SESSIONS = 600
GROUP = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 300, "poll_timeout_ms": 100, "max_batch": 40}


async def _produce(brokers: list[str], topics: Topics) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=5)
    await producer.start()
    futures = []
    try:
        for i in range(SESSIONS):
            user = f"u{i % 50}"
            common = {"session_id": f"s{i}", "user_id": user, "content_id": f"c{i}", "device_id": "d"}
            for event in (
                PositionUpdated(
                    **common, position_seconds=i % 90, playback_state="playing", duration_seconds=100
                ),
                SessionEnded(
                    **common, final_position_seconds=i % 90, completion_rate=0, duration_seconds=100
                ),
            ):
                futures.append(
                    await producer.send(
                        topics.for_type(event.event_type), encode_event(event), key=user.encode()
                    )
                )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


async def test_second_member_joining_rebalances_and_every_message_is_processed_once(
    sqlite_url: str, kafka_brokers: str, topic_prefix: str
) -> None:
    brokers = kafka_brokers.split(",")
    topics = Topics(topic_prefix)
    await ensure_topics(brokers, topics.all, partitions=4)
    total = await _produce(brokers, topics)
    storage = Storage(sqlite_url)
    storage.upgrade()
    sink = EventSink(storage)
    handled: Counter[tuple[str, bool]] = Counter()  # (session, is the end) of every row handed to a sink

    async def slow_sink(batch: PlaybackBatch) -> object:
        """The real sink, slowed down so that a batch is in flight when the group rebalances."""
        handled.update(zip(batch.frame["session_id"], batch.frame["final"], strict=True))
        await asyncio.sleep(0.08)
        return await sink(batch)

    group = f"g-{uuid.uuid4().hex[:8]}"
    first = PlaybackConsumer(brokers, topics, slow_sink, group_id=group, partitions=4, **GROUP)
    second = PlaybackConsumer(brokers, topics, slow_sink, group_id=group, partitions=4, **GROUP)
    await first.start()
    tasks = [asyncio.create_task(first.run())]
    try:
        deadline = time.monotonic() + 30
        while first.stats.batches < 3:
            assert time.monotonic() < deadline, "the first consumer processed nothing"
            await asyncio.sleep(0.02)
        assert first.stats.messages < total / 2, "the first consumer finished too early for a rebalance"
        await second.start()  # joins the group: the first one's partitions are revoked and reassigned
        tasks.append(asyncio.create_task(second.run()))
        deadline = time.monotonic() + 60
        while first.stats.messages + second.stats.messages < total:
            assert time.monotonic() < deadline, (first.stats, second.stats)
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # anything replayed would show up here
        for consumer in (first, second):
            consumer.request_stop()
        await asyncio.gather(*tasks)
    finally:
        await first.stop()
        await second.stop()

    assert first.stats.revocations >= 1 and first.stats.commits > 0 and second.stats.commits > 0
    assert first.stats.released_uncommitted == 0  # the listener wrote and committed all it had polled
    assert second.stats.messages > 0, "the second member never received a partition"
    assert first.stats.messages + second.stats.messages == total  # nothing handed over twice
    assert set(handled.values()) == {1} and len(handled) == 2 * SESSIONS
    frame = storage.events_for_users(None)
    assert len(frame) == SESSIONS and frame["event_id"].is_unique
    assert set(frame["event_id"]) == {viewing_event_id(f"s{i}") for i in range(SESSIONS)}
    by_content = dict(zip(frame["content_id"], frame["watch_seconds"], strict=True))
    assert all(by_content[f"c{i}"] == i % 90 for i in range(SESSIONS))
    storage.dispose()
