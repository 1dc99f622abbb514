"""Turning batches of playback events into sona viewing events, profiles and training work.

One viewing event per playback session, with ``event_id =``
:func:`~playback_bridge.viewing_event_id` ``(session_id)``. Within a batch the
observations of a session (position updates, its end) are coalesced to the
furthest position, and the batch is written in one transaction with
``Storage.add_events(..., on_conflict="max_progress")``: a new session inserts
its row, a session that moved further advances it (completion, watch seconds
and the timestamp of that observation), anything else changes nothing. So a
session that is never closed still leaves its progress, and a replay after a
crash writes nothing twice.

The engine follows the same rule: every inserted or advanced row of a batch
is given, once, to ``sona.Sona.observe(..., on_conflict="max_progress")``,
which replaces a stored event only when the new one is further along, so the
touched users' profiles track sessions while they are still playing and a
replay changes nothing. On its first batch for a user, the sink also observes
the user's stored events, so an engine loaded from disk rebuilds the profile
from the whole history rather than from this batch only; a row that storage
already holds further along (written by another consumer, or a replay after
a restart) is likewise taken from storage.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from playback_bridge import _metrics
from playback_bridge._batch import PlaybackBatch
from playback_bridge._messages import (
    PositionUpdated,
    SessionCreated,
    SessionEnded,
    viewing_event_id,
)
from sona.errors import TrainingInProgressError, UnknownContentError
from sona.profile import UserProfile
from sona.storage import Storage

__all__ = ["BatchResult", "EventSink", "ProfileEngine", "TrainingQueue", "viewing_events"]

log = logging.getLogger(__name__)

AnyEvent = SessionCreated | PositionUpdated | SessionEnded
SOURCE = "playback"


class ProfileEngine(Protocol):
    """The part of ``sona.Sona`` the sink uses: incremental update and profile export."""

    def observe(self, events: pd.DataFrame, *, on_conflict: Literal["ignore", "max_progress"]) -> object: ...

    def profiles(self, user_ids: Sequence[str]) -> Sequence[UserProfile]: ...

    def forget_users(self, user_ids: Sequence[str]) -> object: ...


class TrainingQueue:
    """Adapter training for users who crossed the thresholds: a ``queued`` row in ``training_jobs``.

    The table is the queue every serving worker claims from (``Storage.claim_job``),
    so training queued by the Kafka consumer runs on whichever replica is free,
    and the database's one-active-job-per-user index keeps a user from being
    queued twice by several consumers.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def put(self, user_id: str) -> bool:
        """Queue a job for the user; False if one is already queued or running."""
        try:
            self.storage.create_job(user_id)
        except TrainingInProgressError:
            return False
        return True

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and self.storage.active_job(user_id) is not None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did: ``sessions`` rows written as ``inserted`` + ``advanced`` + ``unchanged``."""

    received: int
    sessions: int = 0
    inserted: int = 0
    advanced: int = 0
    unchanged: int = 0
    #: Sessions that ended in this batch.
    final: int = 0
    #: Users with an inserted or advanced row.
    users: tuple[str, ...] = ()
    #: Users whose profile was recomputed and saved.
    profiles: tuple[str, ...] = ()
    queued_for_training: tuple[str, ...] = ()


def viewing_events(batch: PlaybackBatch) -> tuple[pd.DataFrame, npt.NDArray[np.bool_]]:
    """One viewing event per session of the batch (``sona.EVENT_COLUMNS`` subset), and which are final.

    Each session keeps its furthest observation (position, and the timestamp of
    that observation; the later one among equal positions); it is final if any
    of its observations is. ``completion_rate = min(1, position / duration)``.
    """
    f = batch.frame
    if f.empty:
        empty = pd.DataFrame(
            columns=[
                "event_id",
                "user_id",
                "content_id",
                "timestamp",
                "completion_rate",
                "watch_seconds",
                "source",
            ]
        )
        return empty, np.zeros(0, dtype=bool)
    best = f.sort_values("position_seconds", kind="stable").drop_duplicates("session_id", keep="last")
    best = best.sort_index()
    final = best["session_id"].isin(f.loc[f["final"].to_numpy(), "session_id"]).to_numpy()
    position = best["position_seconds"].to_numpy()
    duration = best["duration_seconds"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        completion = np.where(
            duration > 0, np.clip(position / np.where(duration > 0, duration, 1), 0, 1), 0.0
        )
    frame = pd.DataFrame(
        {
            "event_id": [viewing_event_id(s) for s in best["session_id"]],
            "user_id": best["user_id"].to_numpy(dtype=object),
            "content_id": best["content_id"].to_numpy(dtype=object),
            "timestamp": best["timestamp"].array,
            "completion_rate": completion,
            "watch_seconds": position,
            "source": SOURCE,
        }
    )
    return frame, final


@dataclass
class EventSink:
    """Persists a batch of playback events and updates what depends on them.

    Parameters
    ----------
    storage
        Where viewing events (and profiles) are written, idempotently.
    engine
        Optional ``sona.Sona`` (or anything with its ``observe``/``profiles``):
        inserted and advanced sessions are observed (``on_conflict="max_progress"``)
        and the touched users' profiles are saved with ``Storage.save_profiles``.
    min_events, min_interval, min_completion
        Training thresholds: a user with at least ``min_events`` qualifying
        events (not dismissed, completion ≥ ``min_completion``) whose last
        training is older than ``min_interval`` gets a queued training job
        (:attr:`training_queue`, the ``training_jobs`` table) that any serving
        worker claims. ``queue_training=False`` turns this off.

    Call it with a batch (it is an ``EventHandler``, and also takes a
    :class:`~playback_bridge.PlaybackBatch`); the storage work runs in a worker
    thread so the event loop keeps serving.
    """

    storage: Storage
    engine: ProfileEngine | None = None
    min_events: int = 10
    min_interval: timedelta = timedelta(seconds=300)
    min_completion: float = 0.3
    queue_training: bool = True
    training_queue: TrainingQueue = field(init=False, repr=False)
    #: Users whose state the engine keeps (least recently seen are forgotten): ``SONA_USER_CACHE_SIZE``.
    max_cached_users: int = 100_000
    # user → earliest time the user may be queued again.
    _not_before: dict[str, datetime] = field(default_factory=dict, init=False, repr=False)
    # users whose stored history the engine has been given (least recently used first).
    _hydrated: OrderedDict[str, None] = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.training_queue = TrainingQueue(self.storage)

    async def __call__(self, events: Sequence[AnyEvent] | PlaybackBatch) -> BatchResult:
        return await asyncio.to_thread(self.handle, events)

    def handle(self, events: Sequence[AnyEvent] | PlaybackBatch) -> BatchResult:
        """Write one batch; raises ``sona.StorageError`` if the database write fails (nothing committed)."""
        batch = events if isinstance(events, PlaybackBatch) else PlaybackBatch.from_events(events)
        received = len(events)
        views, final = viewing_events(batch)
        if views.empty:
            return BatchResult(received=received)
        result = self.storage.add_events(views, on_conflict="max_progress")
        _metrics.EVENTS_WRITTEN.labels(result="inserted").inc(result.inserted)
        _metrics.EVENTS_WRITTEN.labels(result="advanced").inc(result.advanced)
        _metrics.EVENTS_WRITTEN.labels(result="unchanged").inc(result.duplicates)
        changed = views["event_id"].isin(result.inserted_event_ids + result.advanced_event_ids).to_numpy()
        profiles = self._update_profiles(views, changed) if self.engine is not None else ()
        return BatchResult(
            received=received,
            sessions=len(views),
            inserted=result.inserted,
            advanced=result.advanced,
            unchanged=result.duplicates,
            final=int(final.sum()),
            users=tuple(pd.unique(views.loc[changed, "user_id"])),
            profiles=profiles,
            queued_for_training=self._queue_for_training(views[changed]),
        )

    def _update_profiles(self, views: pd.DataFrame, changed: npt.NDArray[np.bool_]) -> tuple[str, ...]:
        """Observe the batch's written rows (plus stored history the engine may lack); save profiles."""
        assert self.engine is not None
        stale = views[~changed]  # stored further along already, or a replay: use what is stored
        users = list(pd.unique(views["user_id"]))
        fresh_users = [u for u in users if u not in self._hydrated]
        read = list(dict.fromkeys([*fresh_users, *pd.unique(stale["user_id"])]))
        parts = [views[changed]]
        if read:
            stored = self.storage.events_for_users(read)
            wanted = stored["user_id"].isin(fresh_users) | stored["event_id"].isin(stale["event_id"])
            parts.append(stored[wanted.to_numpy()])
        observed = self._observe(pd.concat(parts, ignore_index=True))
        for u in users:
            self._hydrated[u] = None
            self._hydrated.move_to_end(u)
        if observed:
            self.storage.save_profiles(list(self.engine.profiles(list(observed))))
        # Bounded like a serving worker: the least recently seen users leave the engine too (their next
        # batch reads their stored history again), so a long-running consumer does not grow with users.
        evicted = []
        while len(self._hydrated) > self.max_cached_users:
            evicted.append(self._hydrated.popitem(last=False)[0])
        if evicted:
            self.engine.forget_users(evicted)
            _metrics.SINK_USERS_DROPPED.inc(len(evicted))
        return observed

    def _observe(self, events: pd.DataFrame) -> tuple[str, ...]:
        """``engine.observe`` minus titles the engine's catalog lacks; returns the users observed."""
        assert self.engine is not None
        events = events.reset_index(drop=True)
        while not events.empty:
            try:
                self.engine.observe(events, on_conflict="max_progress")
            except UnknownContentError as exc:  # playback can name titles the model was not fitted on
                log.info("not observing unknown titles %s", exc.content_ids)
                events = events[~events["content_id"].isin(exc.content_ids)].reset_index(drop=True)
                continue
            return tuple(pd.unique(events["user_id"]))
        return ()

    def _queue_for_training(self, changed: pd.DataFrame) -> tuple[str, ...]:
        """Queue users whose qualifying count now reaches ``min_events`` (one grouped count per batch)."""
        if not self.queue_training:
            return ()
        now = datetime.now(UTC)
        candidates = [
            u
            for u in pd.unique(changed.loc[changed["completion_rate"] >= self.min_completion, "user_id"])
            if now >= self._not_before.get(u, now)
        ]
        if not candidates:
            return ()
        counts = self.storage.qualifying_event_counts(candidates, self.min_completion)
        ready = [u for u in candidates if counts[u] >= self.min_events]
        trained = self.storage.last_trained_times(ready) if ready else {}
        queued: list[str] = []
        for uid in ready:  # one iteration per user crossing the threshold, not per event
            last = trained.get(uid)
            if last is not None and now - last < self.min_interval:
                self._not_before[uid] = last + self.min_interval
                continue
            self._not_before.pop(uid, None)
            if self.training_queue.put(uid):
                queued.append(uid)
        _metrics.TRAINING_QUEUED.inc(len(queued))
        return tuple(queued)
