"""Kafka mode: the consumer queues adapter training in the database, where any serving worker claims it."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from playback_bridge import EventSink, KafkaEventProducer, Topics
from playback_bridge.consumer import PlaybackConsumer
from sona.storage import Storage
from tests.bridge.conftest import FAST_GROUP, until
from tests.bridge.test_sink import ended

pytestmark = [pytest.mark.kafka]


async def test_consumer_queues_a_training_job_for_a_user_past_the_guards(
    database_url: str, kafka_brokers: str, topic_prefix: str
) -> None:
    brokers, topics = kafka_brokers.split(","), Topics(topic_prefix)
    storage = Storage(database_url)
    storage.upgrade()
    producer = KafkaEventProducer(brokers, topics, partitions=2)
    await producer.start()
    try:
        for i in range(12):  # 12 finished viewings: past min_events=10
            await producer.deliver(ended(f"s{i}-{uuid.uuid4().hex[:6]}", "fan", f"c{i}", 90))
        await producer.deliver(ended(f"few-{uuid.uuid4().hex[:6]}", "newcomer", "c1", 90))  # below the guard
    finally:
        await producer.stop()

    sink = EventSink(storage, min_events=10)
    consumer = PlaybackConsumer(brokers, topics, sink, group_id=f"g-{uuid.uuid4().hex[:8]}", **FAST_GROUP)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: consumer.stats.messages >= 13)
        consumer.request_stop()
        await task
    finally:
        await consumer.stop()
    jobs = storage.list_jobs()
    assert [(j.user_id, j.status, j.attempts) for j in jobs] == [("fan", "queued", 0)]
    claimed = storage.claim_job("a-serving-worker")  # what any replica's training thread does
    assert claimed is not None and claimed.user_id == "fan"
    storage.dispose()
