"""The playback HTTP API against real Redis, with a real loopback sync server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
import redis.asyncio as aioredis

from playback_bridge import (
    InProcessEventBus,
    PositionUpdated,
    SessionCreated,
    SessionEnded,
    SyncNotifier,
)
from tests.bridge.conftest import SyncServer, running_app, token

pytestmark = pytest.mark.redis

BODY = {"user_id": "u1", "content_id": "c1", "device_id": "tv", "duration_seconds": 1000.0}


class Collected:
    """The in-process bus's handler: keeps what the service published."""

    def __init__(self) -> None:
        self.events: list[SessionCreated | PositionUpdated | SessionEnded] = []

    async def __call__(self, batch: Sequence[SessionCreated | PositionUpdated | SessionEnded]) -> None:
        self.events.extend(batch)


@pytest.fixture
async def api(
    redis_client: aioredis.Redis, namespace: str, sync_server: SyncServer
) -> AsyncIterator[tuple[httpx.AsyncClient, InProcessEventBus, Collected, SyncNotifier]]:
    collected = Collected()
    bus = InProcessEventBus(collected)
    notifier = SyncNotifier(sync_server.url, timeout_seconds=1.0)
    async with running_app(redis_client, bus, notifier, namespace) as (_, client):
        yield client, bus, collected, notifier


async def test_session_lifecycle_publishes_events_and_syncs(
    api: tuple[httpx.AsyncClient, InProcessEventBus, Collected, SyncNotifier],
    sync_server: SyncServer,
    redis_client: aioredis.Redis,
    namespace: str,
) -> None:
    client, bus, collected, notifier = api
    h = token("u1")
    r = await client.post("/api/v1/sessions", json={**BODY, "quality": "high"}, headers=h)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["position_seconds"] == 0 and s["playback_state"] == "playing" and s["quality"] == "high"
    assert s["resume_position_seconds"] is None
    sid = s["id"]
    assert {k.decode() async for k in redis_client.scan_iter(match=f"{namespace}:*")} == {
        f"{namespace}:session:{sid}",
        f"{namespace}:user:u1:sessions",
    }
    ttl = await redis_client.ttl(f"{namespace}:session:{sid}")
    assert 24 * 3600 - 5 < ttl <= 24 * 3600

    await redis_client.expire(f"{namespace}:session:{sid}", 500)  # the TTL must survive updates
    r = await client.patch(f"/api/v1/sessions/{sid}/position", json={"position_seconds": 300}, headers=h)
    assert r.status_code == 200 and r.json()["position_seconds"] == 300
    assert r.json()["resume_position_seconds"] == 300
    assert await redis_client.ttl(f"{namespace}:session:{sid}") <= 500

    r = await client.patch(
        f"/api/v1/sessions/{sid}/position",
        json={"position_seconds": 400, "playback_state": "paused"},
        headers=h,
    )
    assert r.json()["playback_state"] == "paused"
    r = await client.get(f"/api/v1/sessions/{sid}", headers=h)
    assert r.status_code == 200 and r.json()["position_seconds"] == 400

    r = await client.patch(f"/api/v1/sessions/{sid}/position", json={"position_seconds": 1000}, headers=h)
    assert r.json()["playback_state"] == "ended"
    assert r.json()["resume_position_seconds"] is None  # finished: nothing to resume

    assert (await client.delete(f"/api/v1/sessions/{sid}", headers=h)).status_code == 204
    assert (await client.delete(f"/api/v1/sessions/{sid}", headers=h)).status_code == 204
    r = await client.get(f"/api/v1/sessions/{sid}", headers=h)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found" and r.json()["request_id"]

    await bus.flush()
    kinds = [type(e).__name__ for e in collected.events]
    assert kinds == [
        "SessionCreated",
        "PositionUpdated",
        "PositionUpdated",
        "PositionUpdated",
        "SessionEnded",
    ]
    ended = collected.events[-1]
    assert isinstance(ended, SessionEnded)
    assert ended.final_position_seconds == 1000 and ended.completion_rate == 1.0
    assert {e.session_id for e in collected.events} == {sid}

    await notifier.drain()
    # Every update is sent unless a newer one for the title superseded it while a send was in flight.
    assert notifier.stats.sent + notifier.stats.coalesced == 3 and notifier.stats.sent >= 2
    assert set(sync_server.paths) == {"/api/v1/sync/progress"}
    last = sync_server.received[-1]
    assert (last["position_seconds"], last["state"]) == (1000, "ended")  # the latest always goes out
    first = sync_server.received[0]
    assert set(first) == {
        "user_id",
        "content_id",
        "device_id",
        "position_seconds",
        "duration_seconds",
        "state",
        "timestamp",
    }
    assert first["state"] == "playing" and first["position_seconds"] == 300


async def test_resume_rule_and_continue_watching(
    api: tuple[httpx.AsyncClient, InProcessEventBus, Collected, SyncNotifier],
) -> None:
    client, *_ = api
    h = token("u1")
    positions = {"c-short": 10.0, "c-mid": 500.0, "c-done": 990.0}
    for content_id, pos in positions.items():
        sid = (
            await client.post("/api/v1/sessions", json={**BODY, "content_id": content_id}, headers=h)
        ).json()["id"]
        await client.patch(f"/api/v1/sessions/{sid}/position", json={"position_seconds": pos}, headers=h)
        await client.delete(f"/api/v1/sessions/{sid}", headers=h)  # progress survives the session
    r = await client.get(
        "/api/v1/playback/continue-watching", params={"user_id": "u1", "limit": 5}, headers=h
    )
    assert r.status_code == 200
    items = r.json()["items"]
    assert [(i["content_id"], i["resume_position_seconds"]) for i in items] == [("c-mid", 500.0)]
    # A new session of that title starts with the resume hint.
    again = await client.post("/api/v1/sessions", json={**BODY, "content_id": "c-mid"}, headers=h)
    assert again.json()["resume_position_seconds"] == 500.0
    fresh = await client.post("/api/v1/sessions", json={**BODY, "content_id": "c-short"}, headers=h)
    assert fresh.json()["resume_position_seconds"] is None
    listed = await client.get("/api/v1/users/u1/sessions", headers=h)
    assert {s["id"] for s in listed.json()["sessions"]} == {again.json()["id"], fresh.json()["id"]}


async def test_auth_and_validation(
    api: tuple[httpx.AsyncClient, InProcessEventBus, Collected, SyncNotifier],
) -> None:
    client, *_ = api
    sid = (await client.post("/api/v1/sessions", json=BODY, headers=token("u1"))).json()["id"]
    assert (await client.get(f"/api/v1/sessions/{sid}")).status_code == 401
    other = await client.patch(
        f"/api/v1/sessions/{sid}/position", json={"position_seconds": 5}, headers=token("u2")
    )
    assert other.status_code == 403 and other.json()["error"] == "forbidden"
    assert (await client.delete(f"/api/v1/sessions/{sid}", headers=token("u2"))).status_code == 403
    assert (
        await client.get(f"/api/v1/sessions/{sid}", headers=token("svc", service=True))
    ).status_code == 200
    assert (await client.post("/api/v1/sessions", json=BODY, headers=token("u2"))).status_code == 403
    assert (await client.get("/api/v1/users/u1/sessions", headers=token("u2"))).status_code == 403

    bad = await client.patch(
        f"/api/v1/sessions/{sid}/position", json={"position_seconds": -1}, headers=token("u1")
    )
    assert bad.status_code == 422
    assert (
        set(bad.json()) >= {"error", "message", "request_id"} and "position_seconds" in bad.json()["message"]
    )
    for body in ({**BODY, "duration_seconds": 0}, {**BODY, "quality": "8k"}, {**BODY, "user_id": " "}):
        r = await client.post("/api/v1/sessions", json=body, headers=token("u1"))
        assert r.status_code == 422, body
    r = await client.get(
        "/api/v1/playback/continue-watching", params={"user_id": "u1", "limit": 0}, headers=token("u1")
    )
    assert r.status_code == 422


async def test_blackholed_sync_never_delays_updates(
    redis_client: aioredis.Redis, namespace: str, blackhole_sync: str
) -> None:
    collected = Collected()
    # A timeout far longer than the 20 updates take: every send is still pending when the last
    # update has returned, so each response provably did not wait for its notification.
    notifier = SyncNotifier(blackhole_sync, max_in_flight=4, timeout_seconds=2.0)
    async with running_app(redis_client, InProcessEventBus(collected), notifier, namespace) as (_, client):
        h = token("u1")
        sids = [
            (await client.post("/api/v1/sessions", json={**BODY, "content_id": f"c{k}"}, headers=h)).json()[
                "id"
            ]
            for k in range(5)
        ]
        for i in range(20):  # 5 titles x 4 updates: more titles than the in-flight bound
            r = await client.patch(
                f"/api/v1/sessions/{sids[i % 5]}/position", json={"position_seconds": i}, headers=h
            )
            assert r.status_code == 200
            assert notifier.in_flight == min(i + 1, 4)  # returned with its notification still pending
        assert notifier.stats.sent == notifier.stats.failed == 0
        await notifier.drain()
    stats = notifier.stats
    # Titles 0-3 go out at once; each newer position of them waits in its title's slot (the first
    # fills it, the next two replace it: 2 x 4 coalesced) and goes out when the first send fails.
    # Title 4 finds the four slots busy every time (4 dropped). 8 sends, all failed.
    assert (stats.sent, stats.failed, stats.dropped, stats.coalesced) == (0, 8, 4, 8)


async def test_sync_disabled_when_unset(redis_client: aioredis.Redis, namespace: str) -> None:
    notifier = SyncNotifier(None)
    async with running_app(redis_client, InProcessEventBus(Collected()), notifier, namespace) as (_, client):
        sid = (await client.post("/api/v1/sessions", json=BODY, headers=token("u1"))).json()["id"]
        r = await client.patch(
            f"/api/v1/sessions/{sid}/position", json={"position_seconds": 1}, headers=token("u1")
        )
        assert r.status_code == 200
    assert (
        not notifier.enabled and notifier.stats.sent == notifier.stats.failed == notifier.stats.dropped == 0
    )
