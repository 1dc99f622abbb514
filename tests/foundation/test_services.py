"""The real services `make test` starts are reachable (and nothing silently skips)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa


@pytest.mark.postgres
def test_postgres_answers(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select 41 + 1")).scalar() == 42
    engine.dispose()


@pytest.mark.redis
def test_redis_answers(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"test:{uuid.uuid4().hex}"
    client.set(key, "v", ex=10)
    assert client.get(key) == b"v"
    client.delete(key)


@pytest.mark.kafka
def test_kafka_round_trip(kafka_brokers: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"smoke-{uuid.uuid4().hex[:8]}"

    async def run() -> bytes:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_brokers)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_brokers, auto_offset_reset="earliest", enable_auto_commit=False
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), timeout=20)
            return msg.value
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == b"hello"
