"""Concurrent writes to one Redis session: the newest update wins, a deleted session stays deleted."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from playback_bridge import PlaybackSession, PlaybackState, Quality, SessionStore

pytestmark = pytest.mark.redis


async def _session(store: SessionStore, user: str = "u1", duration: float = 1000.0) -> PlaybackSession:
    return await store.create(
        user_id=user, content_id="c1", device_id="tv", duration_seconds=duration, quality=Quality.AUTO
    )


async def test_concurrent_updates_from_one_read_end_with_the_newest(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    store = SessionStore(redis_client, namespace=namespace)
    session = await _session(store)
    updates = list(range(1, 61))
    random.Random(3).shuffle(updates)
    # Every update starts from the same read, as concurrent PATCHes do; update i happens at started_at + i s.
    results = await asyncio.gather(
        *(
            store.update_position(
                session,
                float(i),
                PlaybackState.PAUSED if i % 2 else PlaybackState.PLAYING,
                at=session.started_at + timedelta(seconds=i),
            )
            for i in updates
        )
    )
    assert all(r is not None for r in results)
    stored = await store.get(session.id)
    assert stored is not None
    assert stored.position_seconds == 60.0
    assert stored.playback_state is PlaybackState.PLAYING
    assert stored.updated_at == session.started_at + timedelta(seconds=60)
    progress = json.loads(await redis_client.hget(f"{namespace}:user:u1:progress", "c1"))
    assert progress["position_seconds"] == 60.0
    score = await redis_client.zscore(f"{namespace}:user:u1:sessions", session.id)
    assert score == (session.started_at + timedelta(seconds=60)).timestamp()


async def test_an_older_update_never_overwrites_the_end(redis_client: aioredis.Redis, namespace: str) -> None:
    store = SessionStore(redis_client, namespace=namespace)
    session = await _session(store, duration=100.0)
    t = session.started_at
    ended = await store.update_position(session, 100.0, None, at=t + timedelta(seconds=10))
    assert ended is not None and ended.playback_state is PlaybackState.ENDED
    # A PATCH that read the session before the end and arrives late: superseded, not written.
    late = await store.update_position(session, 40.0, PlaybackState.PLAYING, at=t + timedelta(seconds=5))
    assert late == ended
    assert await store.get(session.id) == ended


async def test_update_after_delete_writes_nothing(redis_client: aioredis.Redis, namespace: str) -> None:
    store = SessionStore(redis_client, namespace=namespace)
    session = await _session(store)
    final = await store.delete(session.id)
    assert final == session
    assert await store.update_position(session, 500.0, None) is None
    assert await store.get(session.id) is None
    assert await redis_client.exists(f"{namespace}:user:u1:progress") == 0
    assert await redis_client.zcard(f"{namespace}:user:u1:sessions") == 0
    assert await store.delete(session.id) is None


async def test_updates_racing_a_delete_never_resurrect_or_leave_progress(
    redis_client: aioredis.Redis, namespace: str
) -> None:
    store = SessionStore(redis_client, namespace=namespace)
    session = await _session(store)
    results = await asyncio.gather(
        store.delete(session.id),
        *(store.update_position(session, float(i), None) for i in range(1, 20)),
    )
    deleted, updates = results[0], results[1:]
    assert deleted is not None
    assert await store.get(session.id) is None
    assert await redis_client.zscore(f"{namespace}:user:u1:sessions", session.id) is None
    # Updates that ran before the delete left progress; none after it did, so the progress
    # is exactly the last position the deleted session had.
    raw = await redis_client.hget(f"{namespace}:user:u1:progress", "c1")
    written = [u for u in updates if u is not None]
    if written:
        assert json.loads(raw)["position_seconds"] == deleted.position_seconds
    else:
        assert raw is None
