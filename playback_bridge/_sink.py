"""Turning batches of playback events into sona viewing events, profiles and training work.

One viewing event per playback session, with ``event_id =``
:func:`~playback_bridge.viewing_event_id` ``(session_id)``. Storage writes are
insert-or-ignore on ``event_id``, so the first row written for a session is the
one that stays; the row is therefore written only from a *final* observation:
a ``session-ended`` event, or a position update that reached the end
(``playback_state == "ended"``). Within a batch the final observations are
coalesced per (user, content), keeping the furthest position, and written in
one transaction. Non-final position updates are counted and skipped: writing
them would shadow the session's final completion.

A replay after a crash produces the same ids, so nothing is written twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
import pandas as pd

from playback_bridge import _metrics
from playback_bridge._messages import (
    PlaybackState,
    PositionUpdated,
    SessionCreated,
    SessionEnded,
    viewing_event_id,
)
from sona.profile import UserProfile
from sona.storage import Storage

__all__ = ["BatchResult", "EventSink", "ProfileEngine", "TrainingQueue", "events_frame"]

log = logging.getLogger(__name__)

AnyEvent = SessionCreated | PositionUpdated | SessionEnded
SOURCE = "playback"


class ProfileEngine(Protocol):
    """The part of ``sona.Sona`` the sink uses: incremental update and profile export."""

    def observe(self, events: pd.DataFrame) -> object: ...

    def profiles(self, user_ids: Sequence[str]) -> Sequence[UserProfile]: ...


class TrainingQueue:
    """Users waiting for a batched LoRA training run, each at most once, oldest first."""

    def __init__(self) -> None:
        self._users: OrderedDict[str, datetime] = OrderedDict()

    def put(self, user_id: str) -> bool:
        """Queue a user; False if already queued."""
        if user_id in self._users:
            return False
        self._users[user_id] = datetime.now(UTC)
        return True

    def drain(self, max_users: int | None = None) -> list[str]:
        """Take up to ``max_users`` queued users (all by default) for one training batch."""
        n = len(self._users) if max_users is None else min(max_users, len(self._users))
        return [self._users.popitem(last=False)[0] for _ in range(n)]

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did."""

    received: int
    final: int
    inserted: int
    duplicates: int
    skipped: int
    users: tuple[str, ...] = ()
    queued_for_training: tuple[str, ...] = ()


def events_frame(events: Sequence[AnyEvent]) -> pd.DataFrame:
    """Coalesced viewing events (``sona.EVENT_COLUMNS``) from the final observations in a batch.

    Final observations are ``SessionEnded`` events and position updates in
    state ``ended``; per (user, content) the furthest position wins.
    """
    finals = [
        e
        for e in events
        if isinstance(e, SessionEnded)
        or (isinstance(e, PositionUpdated) and e.playback_state is PlaybackState.ENDED)
    ]
    if not finals:
        return pd.DataFrame(columns=["event_id", "user_id", "content_id", "timestamp", "completion_rate"])
    position = np.fromiter(
        (e.final_position_seconds if isinstance(e, SessionEnded) else e.position_seconds for e in finals),
        dtype=np.float64,
        count=len(finals),
    )
    duration = np.fromiter((e.duration_seconds for e in finals), dtype=np.float64, count=len(finals))
    with np.errstate(divide="ignore", invalid="ignore"):
        completion = np.where(
            duration > 0, np.minimum(1.0, position / np.where(duration > 0, duration, 1)), 0.0
        )
    frame = pd.DataFrame(
        {
            "session_id": [e.session_id for e in finals],
            "user_id": [e.user_id for e in finals],
            "content_id": [e.content_id for e in finals],
            "timestamp": pd.to_datetime([e.timestamp for e in finals], utc=True),
            "position": position,
            "completion_rate": completion,
        }
    )
    best = frame.sort_values("position", kind="stable").groupby(["user_id", "content_id"], sort=False).tail(1)
    best = best.sort_index()
    return pd.DataFrame(
        {
            "event_id": best["session_id"].map(viewing_event_id).to_numpy(dtype=object),
            "user_id": best["user_id"].to_numpy(dtype=object),
            "content_id": best["content_id"].to_numpy(dtype=object),
            "timestamp": best["timestamp"].to_numpy(),
            "completion_rate": best["completion_rate"].to_numpy(),
            "watch_seconds": best["position"].to_numpy(),
            "source": SOURCE,
        }
    )


@dataclass
class EventSink:
    """Persists a batch of playback events and updates what depends on them.

    Parameters
    ----------
    storage
        Where viewing events (and profiles) are written, idempotently.
    engine
        Optional ``sona.Sona``: newly inserted events are passed to ``observe``
        and the touched users' profiles are saved.
    min_events, min_interval
        Training thresholds: a user with at least ``min_events`` qualifying
        events (not dismissed, completion ≥ ``min_completion``) whose last
        training is older than ``min_interval`` is put on :attr:`training_queue`.

    Call it with a batch (it is an ``EventHandler``); the storage work runs in a
    worker thread so the event loop keeps serving.
    """

    storage: Storage
    engine: ProfileEngine | None = None
    min_events: int = 10
    min_interval: timedelta = timedelta(seconds=300)
    min_completion: float = 0.3
    training_queue: TrainingQueue = field(default_factory=TrainingQueue)
    max_cached_users: int = 100_000
    # user → qualifying events known to be stored; avoids a count query per batch.
    _counts: OrderedDict[str, int] = field(default_factory=OrderedDict, init=False, repr=False)
    # user → earliest time the user may be queued again.
    _not_before: dict[str, datetime] = field(default_factory=dict, init=False, repr=False)

    async def __call__(self, events: Sequence[AnyEvent]) -> BatchResult:
        return await asyncio.to_thread(self.handle, events)

    def handle(self, events: Sequence[AnyEvent]) -> BatchResult:
        """Write one batch; raises ``sona.StorageError`` if the database write fails (nothing committed)."""
        frame = events_frame(events)
        if frame.empty:
            return BatchResult(received=len(events), final=0, inserted=0, duplicates=0, skipped=len(events))
        result = self.storage.add_events(frame)
        _metrics.EVENTS_WRITTEN.labels(result="inserted").inc(result.inserted)
        _metrics.EVENTS_WRITTEN.labels(result="duplicate").inc(result.duplicates)
        inserted = frame[frame["event_id"].isin(result.inserted_event_ids)]
        users = tuple(pd.unique(inserted["user_id"]))
        if users and self.engine is not None:
            self.engine.observe(inserted.reset_index(drop=True))
            self.storage.save_profiles(list(self.engine.profiles(list(users))))
        queued = self._queue_for_training(inserted)
        return BatchResult(
            received=len(events),
            final=len(frame),
            inserted=result.inserted,
            duplicates=result.duplicates,
            skipped=len(events) - len(frame),
            users=users,
            queued_for_training=queued,
        )

    def _queue_for_training(self, inserted: pd.DataFrame) -> tuple[str, ...]:
        if inserted.empty:
            return ()
        qualifying = inserted[inserted["completion_rate"] >= self.min_completion]
        added = qualifying["user_id"].value_counts()
        now = datetime.now(UTC)
        queued: list[str] = []
        for user_id, n in added.items():  # one iteration per touched user, not per event
            uid = str(user_id)
            if uid in self._counts:
                self._counts[uid] += int(n)
                self._counts.move_to_end(uid)
            else:  # the stored count already includes this batch
                self._counts[uid] = self.storage.count_qualifying_events(uid, self.min_completion)
                if len(self._counts) > self.max_cached_users:
                    self._counts.popitem(last=False)
            if self._counts[uid] < self.min_events or uid in self.training_queue:
                continue
            if now < self._not_before.get(uid, now):
                continue
            last = self.storage.last_trained_at(uid)
            if last is not None and now - last < self.min_interval:
                self._not_before[uid] = last + self.min_interval
                continue
            self._not_before.pop(uid, None)
            if self.training_queue.put(uid):
                queued.append(uid)
        _metrics.TRAINING_QUEUED.inc(len(queued))
        return tuple(queued)
