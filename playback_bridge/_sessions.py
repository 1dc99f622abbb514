"""Playback sessions in Redis: state only, no logic beyond the resume rule.

Keys (``ns`` defaults to ``playback``, so they cannot collide with other services):

==================================  =======================================================
``{ns}:session:{id}``               the session as JSON; TTL 24 h, kept on update
``{ns}:user:{uid}:sessions``        sorted set of the user's session ids by ``updated_at``
``{ns}:user:{uid}:progress``        hash ``content_id`` → last position JSON (continue-watching
                                    survives a deleted session)
==================================  =======================================================

Every write is atomic, so a session and its indexes change together: creation
is one ``MULTI``, and a position update and a delete are Lua scripts (one round
trip each). A position update is a compare-and-set against the session as the
caller read it: if another update (or a delete) got there first, it is
recomputed from the stored session, so concurrent updates never overwrite a
newer one with one computed from a stale read, ``updated_at`` never moves
backwards, and a deleted session is never resurrected or its progress written.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict
from redis.commands.core import AsyncScript

from playback_bridge._messages import PlaybackState, Quality

__all__ = [
    "RESUME_MAX_FRACTION",
    "RESUME_MIN_SECONDS",
    "SESSION_TTL_SECONDS",
    "ContinueWatchingItem",
    "PlaybackSession",
    "SessionStore",
    "resume_position",
]

SESSION_TTL_SECONDS = 24 * 3600
#: Positions under this many seconds are not worth resuming.
RESUME_MIN_SECONDS = 30.0
#: Positions past this fraction of the duration count as finished.
RESUME_MAX_FRACTION = 0.95


# KEYS: session, user's sessions, user's progress. ARGV: the session as read, as to be written,
# updated_at (epoch seconds), session id, content id, progress JSON, progress TTL.
# Returns 1 if written, false if the session is gone, else the stored session (the caller recomputes).
_UPDATE = """
local stored = redis.call('GET', KEYS[1])
if not stored then return false end
if stored ~= ARGV[1] then return stored end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[7])
return 1
"""
# KEYS: session. ARGV: the user-index key prefix and suffix, session id. Returns the deleted session.
# (The user's index key is known only from the stored session, hence built here.)
_DELETE = """
local raw = redis.call('GETDEL', KEYS[1])
if raw then
  redis.call('ZREM', ARGV[1] .. cjson.decode(raw)['user_id'] .. ARGV[2], ARGV[3])
end
return raw
"""


def resume_position(position_seconds: float, duration_seconds: float) -> float | None:
    """Where to resume: none under 30 s or above 95 % of the duration, else the position."""
    if position_seconds < RESUME_MIN_SECONDS or position_seconds > RESUME_MAX_FRACTION * duration_seconds:
        return None
    return position_seconds


class PlaybackSession(BaseModel):
    """One playback session as stored and returned by the HTTP API.

    ``resume_position_seconds`` is where to resume this title: at creation it
    comes from the user's previous session of the same title, after the first
    position update from this session's own position.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    user_id: str
    content_id: str
    device_id: str
    position_seconds: float
    duration_seconds: float
    playback_state: PlaybackState
    quality: Quality
    started_at: datetime
    updated_at: datetime
    resume_position_seconds: float | None


class ContinueWatchingItem(BaseModel):
    """A title the user can resume."""

    content_id: str
    session_id: str
    device_id: str
    position_seconds: float
    duration_seconds: float
    resume_position_seconds: float
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SessionStore:
    """Reads and writes sessions; Redis errors propagate as ``redis.exceptions.RedisError``."""

    redis: aioredis.Redis
    namespace: str = "playback"
    ttl_seconds: int = SESSION_TTL_SECONDS
    _update: AsyncScript = field(init=False, repr=False, compare=False)
    _delete: AsyncScript = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_update", self.redis.register_script(_UPDATE))
        object.__setattr__(self, "_delete", self.redis.register_script(_DELETE))

    def _session_key(self, session_id: str) -> str:
        return f"{self.namespace}:session:{session_id}"

    def _user_key(self, user_id: str) -> str:
        return f"{self.namespace}:user:{user_id}:sessions"

    def _progress_key(self, user_id: str) -> str:
        return f"{self.namespace}:user:{user_id}:progress"

    async def create(
        self, *, user_id: str, content_id: str, device_id: str, duration_seconds: float, quality: Quality
    ) -> PlaybackSession:
        now = datetime.now(UTC)
        previous = await self.redis.hget(self._progress_key(user_id), content_id)
        resume = None
        if previous is not None:
            last = json.loads(previous)
            resume = resume_position(last["position_seconds"], last["duration_seconds"])
        session = PlaybackSession(
            id=uuid.uuid4().hex,
            user_id=user_id,
            content_id=content_id,
            device_id=device_id,
            position_seconds=0.0,
            duration_seconds=duration_seconds,
            playback_state=PlaybackState.PLAYING,
            quality=quality,
            started_at=now,
            updated_at=now,
            resume_position_seconds=resume,
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._session_key(session.id), session.model_dump_json(), ex=self.ttl_seconds)
            pipe.zadd(self._user_key(user_id), {session.id: now.timestamp()})
            pipe.expire(self._user_key(user_id), self.ttl_seconds)
            await pipe.execute()
        return session

    async def get(self, session_id: str) -> PlaybackSession | None:
        raw = await self.redis.get(self._session_key(session_id))
        return None if raw is None else PlaybackSession.model_validate_json(raw)

    async def update_position(
        self,
        current: PlaybackSession,
        position_seconds: float,
        playback_state: PlaybackState | None,
        *,
        at: datetime | None = None,
    ) -> PlaybackSession | None:
        """Store a new position for ``current`` (as just read); ``None`` if it was deleted meanwhile.

        A position at or past the duration ends the session; without a state,
        an ended session plays again and any other keeps its state. ``at`` is
        the time of the update (now by default). The write is a compare-and-set
        against ``current``: if the stored session changed meanwhile, the update
        is recomputed from it, and if that one is newer than ``at`` it wins and
        is returned unchanged (this update is superseded). The key's TTL is kept.
        """
        now = datetime.now(UTC) if at is None else at
        expected = current.model_dump_json()
        while True:
            if current.updated_at > now:  # a newer update is stored: never go back in time
                return current
            updated = self._moved(current, position_seconds, playback_state, now)
            progress = json.dumps(
                {
                    "session_id": current.id,
                    "device_id": current.device_id,
                    "position_seconds": position_seconds,
                    "duration_seconds": current.duration_seconds,
                    "updated_at": now.isoformat(),
                }
            )
            result = await self._update(
                keys=[
                    self._session_key(current.id),
                    self._user_key(current.user_id),
                    self._progress_key(current.user_id),
                ],
                args=[
                    expected,
                    updated.model_dump_json(),
                    now.timestamp(),
                    current.id,
                    current.content_id,
                    progress,
                    self.ttl_seconds,
                ],
            )
            if result is None:
                return None
            if result == 1:
                return updated
            expected = result  # changed meanwhile: recompute from the stored session
            current = PlaybackSession.model_validate_json(result)

    @staticmethod
    def _moved(
        current: PlaybackSession, position_seconds: float, playback_state: PlaybackState | None, now: datetime
    ) -> PlaybackSession:
        if position_seconds >= current.duration_seconds:
            state = PlaybackState.ENDED
        else:
            state = playback_state or (
                PlaybackState.PLAYING
                if current.playback_state is PlaybackState.ENDED
                else current.playback_state
            )
        return current.model_copy(
            update={
                "position_seconds": position_seconds,
                "playback_state": state,
                "updated_at": now,
                "resume_position_seconds": resume_position(position_seconds, current.duration_seconds),
            }
        )

    async def delete(self, session_id: str) -> PlaybackSession | None:
        """Remove a session and its index entry in one step; return its final state (``None`` if none)."""
        raw = await self._delete(
            keys=[self._session_key(session_id)],
            args=[f"{self.namespace}:user:", ":sessions", session_id],
        )
        return None if raw is None else PlaybackSession.model_validate_json(raw)

    async def for_user(self, user_id: str) -> list[PlaybackSession]:
        """The user's live sessions, most recently updated first; expired ids are pruned."""
        ids = await self.redis.zrevrange(self._user_key(user_id), 0, -1)
        if not ids:
            return []
        raws = await self.redis.mget([self._session_key(i.decode()) for i in ids])
        gone = [i for i, r in zip(ids, raws, strict=True) if r is None]
        if gone:
            await self.redis.zrem(self._user_key(user_id), *gone)
        return [PlaybackSession.model_validate_json(r) for r in raws if r is not None]

    async def continue_watching(self, user_id: str, limit: int) -> list[ContinueWatchingItem]:
        """Titles with a resumable last position, most recent first."""
        entries = await self.redis.hgetall(self._progress_key(user_id))
        items: list[ContinueWatchingItem] = []
        for content_id, raw in entries.items():
            last = json.loads(raw)
            resume = resume_position(last["position_seconds"], last["duration_seconds"])
            if resume is not None:
                items.append(
                    ContinueWatchingItem(
                        content_id=content_id.decode(), resume_position_seconds=resume, **last
                    )
                )
        items.sort(key=lambda item: item.updated_at, reverse=True)
        return items[:limit]
