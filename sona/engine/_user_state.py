"""Per-user state behind one interface: what ranking reads about users, and how events enter it.

Why an interface: the fitted model is immutable and shared, user state is not.
Ranking (:mod:`sona.engine._ranking`) reads users only through :class:`UserRows`,
a consistent view of some users that :meth:`UserState.rows` hands out, so where
the state lives is the implementation's business. Notebooks keep it in memory
(:class:`InMemoryUserState`: the event log plus profile rows); a service can keep
it in the shared store behind the same protocol and bound its per-process copy
with :meth:`UserState.forget`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from sona.engine._event_log import EventLog
from sona.engine._fit_state import event_arrays
from sona.engine._model import FittedModel
from sona.engine._observe import progressed
from sona.engine._profile_rows import merge_profile_rows, take_rows
from sona.engine._requests import OnConflict
from sona.features import ProfileState

__all__ = ["InMemoryUserState", "UserRows", "UserState"]


@dataclass(frozen=True, slots=True)
class UserRows:
    """Some users' state as one ranking call sees it (one snapshot, never half an update)."""

    user_ids: list[str]
    #: Row of each user in ``profiles``; -1 for users without state (cold start).
    rows: npt.NDArray[np.int64]
    profiles: ProfileState
    #: These users' events, sorted by user then time, when asked for (the sequential source).
    events: pd.DataFrame | None = None

    @property
    def known(self) -> npt.NDArray[np.bool_]:
        return self.rows >= 0

    def qualifying(self) -> npt.NDArray[np.int64]:
        """Each user's count of events with positive engagement (0 for unknown users)."""
        return np.where(self.known, self.profiles.qualifying[np.maximum(self.rows, 0)], 0)


class UserState(Protocol):
    """What ranking and training need per user, wherever the state is kept."""

    def users(self) -> npt.NDArray[np.object_]:
        """Every user with state, in row order."""
        ...

    def index(self) -> Mapping[str, int]:
        """User id → row."""
        ...

    def rows(self, user_ids: Sequence[str], *, events: bool = False) -> UserRows:
        """A consistent view of these users (with their events when ``events``)."""
        ...

    def history(self) -> pd.DataFrame:
        """Every event, sorted by user then time."""
        ...

    def events_of(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """These users' events, sorted by user then time (adapters train on them)."""
        ...

    def observe(self, frame: pd.DataFrame, on_conflict: OnConflict) -> None:
        """Merge validated events (titles known to the model); only touched users' rows change."""
        ...

    def forget(self, user_ids: Sequence[str]) -> None:
        """Drop these users' changes since the model was fit: fitted users get their fitted
        state back, users the fit did not see become unknown."""
        ...

    def copy(self, model: FittedModel | None = None) -> UserState:
        """An independent state with the same users now (later changes to either stay apart)."""
        ...


@dataclass(frozen=True, slots=True)
class _Snapshot:
    users: npt.NDArray[np.object_]
    index: dict[str, int]
    log: EventLog
    profiles: ProfileState


def _snapshot(users: npt.NDArray[np.object_], log: EventLog, profiles: ProfileState) -> _Snapshot:
    return _Snapshot(users, {u: i for i, u in enumerate(users)}, log, profiles)


class InMemoryUserState:
    """User state held in this process: the event log and every user's profile rows.

    Each change builds new arrays and publishes them with one assignment, so a
    reader (another thread's request) holds either the old snapshot or the new one.
    The snapshot the model was fitted (or loaded) with is kept for :meth:`forget`.
    Writers must be serialized by the caller (the service's write lock).
    """

    def __init__(
        self,
        model: FittedModel,
        users: npt.NDArray[np.object_],
        history: pd.DataFrame,
        profiles: ProfileState,
    ) -> None:
        self._model = model
        self._fitted = _snapshot(users, EventLog(history), profiles)
        self._now = self._fitted

    def copy(self, model: FittedModel | None = None) -> InMemoryUserState:
        clone = object.__new__(InMemoryUserState)
        clone._model = model or self._model
        clone._fitted, clone._now = self._fitted, self._now
        return clone

    # -- reading ---------------------------------------------------------------------
    def users(self) -> npt.NDArray[np.object_]:
        return self._now.users

    def index(self) -> Mapping[str, int]:
        return self._now.index

    @property
    def profiles(self) -> ProfileState:
        """Every user's profile rows (row order of :meth:`users`)."""
        return self._now.profiles

    def rows(self, user_ids: Sequence[str], *, events: bool = False) -> UserRows:
        now = self._now
        get = now.index.get
        ids = [str(u) for u in user_ids]
        rows = np.fromiter((get(u, -1) for u in ids), dtype=np.int64, count=len(ids))
        return UserRows(ids, rows, now.profiles, now.log.for_users(ids) if events else None)

    def history(self) -> pd.DataFrame:
        """Assembled lazily: ``observe`` appends in time proportional to the new events, and the
        first read afterwards merges them (O(all events) once)."""
        return self._now.log.frame()

    def events_of(self, user_ids: Sequence[str]) -> pd.DataFrame:
        return self._now.log.for_users([str(u) for u in user_ids])

    # -- changing --------------------------------------------------------------------
    def observe(self, frame: pd.DataFrame, on_conflict: OnConflict) -> None:
        now = self._now
        replaced = 0
        if on_conflict == "max_progress":
            frame, replaced = progressed(now.log, frame)
        else:
            frame = now.log.unseen(frame)
        if len(frame) == 0:
            return
        users, index = now.users, now.index
        new_users = sorted(set(frame["user_id"].unique()) - set(index))
        if new_users:  # copies: readers keep using the old ones until the snapshot is published
            users = np.concatenate([users, np.array(new_users, dtype=object)])
            index = {**index, **{u: len(index) + i for i, u in enumerate(new_users)}}
        log = now.log.append(frame, replaced=replaced)
        touched = np.array(sorted(index[u] for u in frame["user_id"].unique()), dtype=np.int64)
        profiles = self._refreshed(now.profiles, log, users[touched], touched, len(index))
        self._now = _Snapshot(users, index, log, profiles)

    def _refreshed(
        self,
        profiles: ProfileState,
        log: EventLog,
        local_ids: npt.NDArray[np.object_],
        rows: npt.NDArray[np.int64],
        n_users: int,
    ) -> ProfileState:
        """``profiles`` grown to ``n_users`` rows, rows ``rows`` (sorted; users ``local_ids``)
        rebuilt from ``log``."""
        sub = log.for_users([str(u) for u in local_ids])
        local_pos = pd.Index(local_ids).get_indexer(sub["user_id"])
        ev = event_arrays(sub, local_pos, self._model.catalog.index_of(sub["content_id"].to_numpy()))
        fresh = self._model.profiles(ev, len(rows))
        return merge_profile_rows(profiles, fresh, rows, n_users)

    def forget(self, user_ids: Sequence[str]) -> None:
        """Costs a pass over the profile rows and the events appended since the fit (over every
        event once after the log was merged, e.g. by ``history()``); the service calls it in batches."""
        now, fitted = self._now, self._fitted
        ids = {str(u) for u in user_ids} & now.index.keys()
        if not ids:
            return
        n_fit = len(fitted.users)
        rows = np.array(sorted(now.index[u] for u in ids), dtype=np.int64)
        back = rows[rows < n_fit]  # fitted users: their fitted rows return
        profiles = now.profiles
        if len(back):
            profiles = merge_profile_rows(profiles, take_rows(fitted.profiles, back), back, len(now.users))
        keep = np.ones(len(now.users), dtype=bool)
        keep[rows[rows >= n_fit]] = False  # users the fit did not see: gone
        log = now.log if now.log.shares_base(fitted.log) else now.log.rebased(fitted.log)
        log = log.without_appended(ids)  # the fitted log's rows of fitted users stay
        if keep.all():
            self._now = _Snapshot(now.users, now.index, log, profiles)
        else:
            self._now = _snapshot(now.users[keep], log, take_rows(profiles, np.flatnonzero(keep)))
