"""A 2xx from the playback API means the event is durable; when that cannot be confirmed the answer is 503."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from playback_bridge import (
    EventSink,
    InProcessEventBus,
    KafkaEventProducer,
    SyncNotifier,
    Topics,
    viewing_event_id,
)
from serving._launch import free_port
from sona.storage import Storage
from tests.bridge.conftest import running_app, token

pytestmark = [pytest.mark.redis]

BODY = {"user_id": "u1", "content_id": "c1", "device_id": "tv", "duration_seconds": 200.0}


def _progress(storage: Storage) -> dict[str, float]:
    frame = storage.events_for_users(["u1"])
    return dict(zip(frame["event_id"], frame["watch_seconds"], strict=True))


async def test_in_process_bus_commits_before_the_answer(
    sqlite_url: str, redis_client: aioredis.Redis, namespace: str
) -> None:
    """No flush, no waiting: the row is in the database when the 200/204 arrives."""
    storage = Storage(sqlite_url)
    storage.upgrade()
    bus = InProcessEventBus(EventSink(storage))
    async with running_app(redis_client, bus, SyncNotifier(None), namespace) as (_, client):
        sid = (await client.post("/api/v1/sessions", json=BODY, headers=token("u1"))).json()["id"]
        r = await client.patch(
            f"/api/v1/sessions/{sid}/position", json={"position_seconds": 80}, headers=token("u1")
        )
        assert r.status_code == 200
        assert _progress(storage) == {viewing_event_id(sid): 80.0}
        await client.patch(
            f"/api/v1/sessions/{sid}/position", json={"position_seconds": 150}, headers=token("u1")
        )
        assert (await client.delete(f"/api/v1/sessions/{sid}", headers=token("u1"))).status_code == 204
        assert _progress(storage) == {viewing_event_id(sid): 150.0}
    storage.dispose()


async def test_an_event_the_database_refuses_is_503_and_the_session_survives(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    storage = Storage(f"postgresql://nobody@127.0.0.1:{free_port()}/gone")  # the database is down
    bus = InProcessEventBus(EventSink(storage), retry_backoff_seconds=0.05, delivery_timeout=0.5)
    async with running_app(redis_client, bus, SyncNotifier(None), namespace) as (_, client):
        sid = (await client.post("/api/v1/sessions", json=BODY, headers=token("u1"))).json()["id"]
        r = await client.patch(
            f"/api/v1/sessions/{sid}/position", json={"position_seconds": 80}, headers=token("u1")
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "event_not_confirmed" and r.headers["Retry-After"] == "1"
        r = await client.delete(f"/api/v1/sessions/{sid}", headers=token("u1"))
        assert r.status_code == 503
        # Not answered 2xx, so the end is not lost either: the session is still there to retry.
        assert (await client.get(f"/api/v1/sessions/{sid}", headers=token("u1"))).status_code == 200
    storage.dispose()


@pytest.mark.kafka
async def test_an_unreachable_broker_is_503_within_the_delivery_timeout(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    producer = KafkaEventProducer(
        [f"127.0.0.1:{free_port()}"], Topics("down"), retry_backoff_seconds=0.05, delivery_timeout=0.5
    )
    async with running_app(redis_client, producer, SyncNotifier(None), namespace) as (_, client):
        sid = (await client.post("/api/v1/sessions", json=BODY, headers=token("u1"))).json()["id"]
        started = time.monotonic()
        r = await client.patch(
            f"/api/v1/sessions/{sid}/position", json={"position_seconds": 80}, headers=token("u1")
        )
        assert r.status_code == 503 and r.json()["error"] == "event_not_confirmed"
        assert time.monotonic() - started < 3.0
