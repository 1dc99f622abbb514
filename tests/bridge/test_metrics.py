"""The bridge's Prometheus metrics move when what they count happens (real broker, real database).

Operators alert on these: Kafka publish failures, and events dead-lettered by the
consumer. (Sync-service latency and JWT failures by reason are checked on a real
server's ``/metrics`` in tests/serving/test_odd_rows_and_metrics.py.)
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest
from prometheus_client import REGISTRY

from playback_bridge import EventSink, EventType, KafkaEventProducer, PositionUpdated, Topics
from playback_bridge.consumer import PlaybackConsumer
from sona.storage import Storage
from tests.bridge.conftest import FAST_GROUP, until
from tests.bridge.test_consumer_poison import _ensure, _send, _update


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_kafka_publish_failures_are_counted() -> None:
    labels = {"transport": "kafka", "outcome": "dropped"}
    before = _value("playback_events_published_total", labels)
    producer = KafkaEventProducer(
        [f"127.0.0.1:{_closed_port()}"], Topics("nowhere"), retry_backoff_seconds=0.05
    )
    await producer.start()
    for i in range(3):
        producer.publish(
            PositionUpdated(
                session_id=f"s{i}",
                user_id="u1",
                content_id="c1",
                device_id="d",
                position_seconds=i,
                playback_state="playing",
                duration_seconds=100,
            )
        )
    await asyncio.sleep(0)
    await producer.stop(timeout=0.2)
    assert _value("playback_events_published_total", labels) == before + 3


@pytest.mark.kafka
async def test_dead_lettered_events_are_counted(
    sqlite_url: str, kafka_brokers: str, topic_prefix: str
) -> None:
    brokers, topics = kafka_brokers.split(","), Topics(topic_prefix)
    storage = Storage(sqlite_url)
    storage.upgrade()
    await _ensure(brokers, topics)
    before = _value("playback_consumer_dead_letters_total")
    poison = {**_update("s-poison"), "user_id": "u\x00nul"}
    await _send(brokers, topics.for_type(EventType.POSITION_UPDATED), [json.dumps(poison).encode()])
    consumer = PlaybackConsumer(
        brokers, topics, EventSink(storage), group_id=f"g-{uuid.uuid4().hex[:8]}", partitions=1, **FAST_GROUP
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: task.done() or consumer.stats.dead_letters == 1)
        assert not task.done()
        assert _value("playback_consumer_dead_letters_total") == before + 1
        consumer.request_stop()
        await task
    finally:
        await consumer.stop()
        storage.dispose()
