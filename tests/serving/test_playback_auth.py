"""Authorization and id validation of the playback API, in-process against real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
import pytest
import redis.asyncio as aioredis

from playback_bridge import InProcessEventBus, PositionUpdated, SessionCreated, SessionEnded, SyncNotifier
from serving.playback import create_app
from tests.serving.conftest import SECRET

pytestmark = pytest.mark.redis

Auth = Callable[..., dict[str, str]]
BODY = {"user_id": "u1", "content_id": "private-title", "device_id": "tv", "duration_seconds": 1000.0}


async def _discard(batch: Sequence[SessionCreated | PositionUpdated | SessionEnded]) -> None:
    return None


@pytest.fixture
async def playback(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    redis = aioredis.from_url(redis_url)
    app = create_app(
        redis=redis,
        producer=InProcessEventBus(_discard),
        notifier=SyncNotifier(None),
        jwt_secret=SECRET,
        namespace=namespace,
    )
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://playback") as client:
                yield client
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{namespace}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def test_continue_watching_of_another_user_is_403(playback: httpx.AsyncClient, auth: Auth) -> None:
    created = await playback.post("/api/v1/sessions", json=BODY, headers=auth("u1"))
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    moved = {"position_seconds": 300}
    await playback.patch(f"/api/v1/sessions/{sid}/position", json=moved, headers=auth("u1"))
    url = "/api/v1/playback/continue-watching"
    other = await playback.get(url, params={"user_id": "u1"}, headers=auth("u2"))
    assert other.status_code == 403, other.text
    assert other.json()["error"] == "forbidden"
    assert "private-title" not in other.text  # nothing of u1's history leaks
    own = await playback.get(url, params={"user_id": "u1"}, headers=auth("u1"))
    assert own.status_code == 200, own.text
    assert "private-title" in own.text  # the history the 403 withheld exists


@pytest.mark.parametrize(
    ("field", "value"),
    [("user_id", "u1\x00"), ("content_id", "c\x00 1"), ("device_id", "tv\n"), ("content_id", "c\x7f")],
)
async def test_ids_with_control_characters_are_422(
    playback: httpx.AsyncClient, auth: Auth, field: str, value: str
) -> None:
    body = {**BODY, field: value}
    r = await playback.post("/api/v1/sessions", json=body, headers=auth(str(body["user_id"])))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation_error" and field in r.json()["message"]


async def test_user_ids_with_control_characters_are_422_in_queries(
    playback: httpx.AsyncClient, auth: Auth
) -> None:
    bad = "u1\x00"
    r = await playback.get("/api/v1/playback/continue-watching", params={"user_id": bad}, headers=auth(bad))
    assert r.status_code == 422, r.text
    ok = await playback.post(
        "/api/v1/sessions", json={**BODY, "content_id": "Amélie (2001)"}, headers=auth("u1")
    )
    assert ok.status_code == 201, ok.text
