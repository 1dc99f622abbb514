"""SIGKILL of a real playback replica during traffic loses no answered event.

A ``bentoml serve serving.playback:PlaybackService`` replica (Kafka, Redis)
serves small sessions (create, one position update, end) from eight concurrent
clients and is SIGKILLed, whole process group, at random points; it is
restarted between kills. Every position update answered 200 and every end
answered 204 must then reach ``viewing_events`` through the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import tempfile
import uuid
from dataclasses import dataclass, field

import httpx
import psutil
import pytest

from playback_bridge import EventSink, Topics, viewing_event_id
from playback_bridge.consumer import PlaybackConsumer
from serving._auth import issue_token
from serving._launch import free_port, launch
from sona.storage import Storage
from tests.bridge.conftest import FAST_GROUP
from tests.conftest import flushed_redis_db

pytestmark = [pytest.mark.redis, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

SECRET = "sigkill-test-secret-0123456789abcdef"
REDIS_DB = 14  # only this test uses it: the replica's keys live under the default namespace
KILLS = 3
SESSIONS = 500
CLIENTS = 8


@dataclass
class Confirmed:
    """What the replica answered with success: furthest confirmed position per session, and ends."""

    position: dict[str, float] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    sessions: int = 0
    users: set[str] = field(default_factory=set)


async def _client(
    base: str, users: list[str], seen: Confirmed, stop: asyncio.Event, rng: random.Random
) -> None:
    """Sessions until ``stop``: create, one position update, end; any failure abandons the session."""
    async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
        while not stop.is_set():
            user = rng.choice(users)
            h = {"Authorization": f"Bearer {issue_token(user, SECRET)}"}
            body = {
                "user_id": user,
                "content_id": f"c{rng.randrange(50)}",
                "device_id": "tv",
                "duration_seconds": 100.0,
            }
            seen.sessions += 1
            try:
                r = await client.post("/api/v1/sessions", json=body, headers=h)
                if r.status_code != 201:
                    continue
                sid = r.json()["id"]
                position = round(rng.uniform(35.0, 95.0), 3)
                r = await client.patch(
                    f"/api/v1/sessions/{sid}/position", json={"position_seconds": position}, headers=h
                )
                if r.status_code != 200:
                    continue
                seen.position[sid] = position
                seen.users.add(user)
                if (await client.delete(f"/api/v1/sessions/{sid}", headers=h)).status_code == 204:
                    seen.ended.add(sid)
            except httpx.HTTPError:
                await asyncio.sleep(0.05)  # the replica is gone; the round ends soon


def _sigkill(pid: int) -> None:
    """SIGKILL the server and its workers (BentoML starts each worker in a session of its own)."""
    victims = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    for victim in victims:  # the arbiter first, so it cannot start a new worker
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    psutil.wait_procs([p for v in victims if (p := _process(v)) is not None], timeout=10)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


async def test_sigkilled_replica_loses_no_confirmed_event(
    postgres_url: str, redis_url: str, kafka_brokers: str, topic_prefix: str
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    env = {
        "REDIS_URL": flushed_redis_db(redis_url, REDIS_DB),
        "KAFKA_BROKERS": kafka_brokers,
        "KAFKA_TOPIC_PREFIX": topic_prefix,
        "KAFKA_PARTITIONS": "2",
        "JWT_SECRET": SECRET,
        "DATABASE_URL": postgres_url,
    }
    port = free_port()
    users = [f"k{uuid.uuid4().hex[:6]}-{i}" for i in range(20)]
    seen = Confirmed()
    kills = 0
    with tempfile.TemporaryFile(mode="w+b") as log:
        while kills < KILLS or seen.sessions < SESSIONS:
            # A random point: after a random share of the sessions this round should carry.
            goal = seen.sessions + rng.randint(60, 2 * SESSIONS // (KILLS + 1) - 60)
            last = kills >= KILLS and goal >= SESSIONS
            with launch(
                "serving.playback:PlaybackService", env, log=log, port=port, ready_path="/readyz", timeout=120
            ) as (proc, base):
                stop = asyncio.Event()
                clients = [asyncio.create_task(_client(base, users, seen, stop, rng)) for _ in range(CLIENTS)]
                while seen.sessions < goal:
                    await asyncio.sleep(0.01)
                if not last:
                    _sigkill(proc.pid)  # mid-traffic: requests are in flight
                    kills += 1
                    await asyncio.sleep(0.3)  # the clients see the replica gone
                stop.set()
                await asyncio.gather(*clients)
            # (the last round ends with a graceful stop)

    assert kills >= KILLS and seen.sessions >= SESSIONS
    assert len(seen.position) > SESSIONS // 2, "too few answered sessions for the test to mean anything"

    storage = Storage(postgres_url)
    storage.upgrade()
    consumer = PlaybackConsumer(
        kafka_brokers.split(","), Topics(topic_prefix), EventSink(storage, queue_training=False),
        group_id=f"g-{uuid.uuid4().hex[:8]}", **FAST_GROUP,
    )  # fmt: skip
    stored: dict[str, float] = {}

    def missing() -> list[str]:
        return [
            sid for sid, pos in seen.position.items() if stored.get(viewing_event_id(sid), -1.0) < pos - 1e-6
        ]

    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            frame = storage.events_for_users(sorted(seen.users))
            stored = dict(zip(frame["event_id"], frame["watch_seconds"], strict=True))
            if not missing():
                break
            await asyncio.sleep(0.5)
        consumer.request_stop()
        await task
    finally:
        await consumer.stop()
        storage.dispose()
    lost = missing()
    ended_lost = [sid for sid in seen.ended if viewing_event_id(sid) not in stored]
    assert (len(lost), len(ended_lost)) == (0, 0), (
        f"{len(lost)} of {len(seen.position)} confirmed position updates and {len(ended_lost)} of "
        f"{len(seen.ended)} confirmed ends are not in viewing_events after {kills} SIGKILLs"
    )
