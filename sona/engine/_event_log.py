"""The engine's event history, appendable in time proportional to the new events.

A sorted base frame (by ``user_id`` then ``timestamp``, stable) plus a short
tuple of appended batches. ``observe`` only needs the touched users' events,
which come from the base through a per-user row range and from the (bounded)
appended batches through one filter; the full sorted frame is assembled
lazily, when someone asks for it, and becomes the new base. Logs are
immutable: ``append`` returns a new log sharing the base, so engine copies
(``Sona.reweighted``) never see each other's later events.

An event whose stored row is replaced (``Sona.observe(on_conflict="max_progress")``)
is appended again with the same ``event_id``: the last row of an id wins,
base first, then the batches in order. Readers drop the older rows of such
ids, so replacing a row costs the same as appending one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["EventLog"]

_SORT = ["user_id", "timestamp"]
_MAX_BATCHES = 8  # appended batches are merged beyond this, so a filter scans few frames
_MIN_COMPACT = 50_000  # appended rows that trigger a merge into the base (or a quarter of it)


class _Base:
    """A sorted frame and its lazily built lookups (shared by every log derived from it)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._ranges: dict[str, tuple[int, int]] | None = None
        self._ids: pd.Index | None = None

    def ranges(self) -> dict[str, tuple[int, int]]:
        if self._ranges is None:
            u = self.frame["user_id"].to_numpy()
            starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if len(u) else np.zeros(0, np.int64)
            ends = np.r_[starts[1:], len(u)].astype(np.int64)
            self._ranges = dict(
                zip(u[starts].tolist(), zip(starts.tolist(), ends.tolist(), strict=True), strict=True)
            )
        return self._ranges

    def ids(self) -> pd.Index:
        """The base's event ids as an index: its hash table is built once, then each lookup is O(new)."""
        if self._ids is None:
            self._ids = pd.Index(self.frame["event_id"].to_numpy(dtype=object))
        return self._ids


def _ranges_index(spans: Sequence[tuple[int, int]]) -> npt.NDArray[np.int64]:
    """Concatenated ``arange(start, end)`` of each span, without a Python loop over rows."""
    if not spans:
        return np.zeros(0, dtype=np.int64)
    se = np.asarray(spans, dtype=np.int64)
    lens = se[:, 1] - se[:, 0]
    shift = np.repeat(se[:, 0] - np.r_[0, np.cumsum(lens)[:-1]], lens)
    return np.arange(int(lens.sum()), dtype=np.int64) + shift


class EventLog:
    """Immutable event history: ``frame()`` is every event sorted by user, then time (stable)."""

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        _base: _Base | None = None,
        _batches: tuple[pd.DataFrame, ...] = (),
        _replaced: int = 0,
    ):
        base = (
            _base
            if _base is not None
            else _Base(frame.sort_values(_SORT, kind="stable").reset_index(drop=True))
        )
        # (base, batches, rows that supersede an older row of their id), in one attribute: ``frame()``
        # swaps in the merged form with one assignment, so a reader on another thread always
        # unpacks a consistent triple, never a merged base with the batches it already holds.
        self._parts: tuple[_Base, tuple[pd.DataFrame, ...], int] = (base, _batches, _replaced)

    def __len__(self) -> int:
        base, batches, replaced = self._parts
        return len(base.frame) + sum(len(b) for b in batches) - replaced

    def frame(self) -> pd.DataFrame:
        """The whole history; merges appended batches into the base first (O(all events), then cached)."""
        base, batches, replaced = self._parts
        if batches:
            merged = _latest(pd.concat([base.frame, *batches], ignore_index=True), replaced)
            base = _Base(merged.sort_values(_SORT, kind="stable").reset_index(drop=True))
            self._parts = (base, (), 0)
        return base.frame

    def stored(self, event_ids: pd.Series) -> pd.DataFrame:
        """The current rows of those ``event_ids`` that are logged (last write wins), in any order."""
        base, batches, _ = self._parts
        ids = event_ids.to_numpy(dtype=object)
        at = base.ids().get_indexer(ids)
        parts = [base.frame.iloc[at[at >= 0]]]
        parts += [b[b["event_id"].isin(ids).to_numpy()] for b in batches]
        return pd.concat(parts, ignore_index=True).drop_duplicates("event_id", keep="last")

    def unseen(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` without events whose ``event_id`` is already logged, and without repeats within it."""
        base, batches, _ = self._parts
        ids = frame["event_id"]
        fresh = pd.Series(base.ids().get_indexer(ids.to_numpy(dtype=object)) < 0, index=ids.index)
        for b in batches:
            fresh &= ~ids.isin(b["event_id"])
        return frame[fresh.to_numpy()].drop_duplicates("event_id")

    def append(self, frame: pd.DataFrame, *, replaced: int = 0) -> EventLog:
        """A new log with ``frame`` added.

        Callers pass :meth:`unseen` events, plus ``replaced`` rows (distinct
        ids, each logged already) that supersede their stored row.
        """
        base, batches, already = self._parts
        batches = (*batches, frame.reset_index(drop=True))
        if len(batches) > _MAX_BATCHES:
            batches = (pd.concat(batches, ignore_index=True),)
        log = EventLog(frame, _base=base, _batches=batches, _replaced=already + replaced)
        if sum(len(b) for b in batches) > max(_MIN_COMPACT, len(base.frame) // 4):
            log.frame()  # amortized: the base at least grows by a quarter between merges
        return log

    def shares_base(self, other: EventLog) -> bool:
        """True while both logs are ``other``'s base plus appended batches (no merge since)."""
        return self._parts[0] is other._parts[0]

    def rebased(self, onto: EventLog) -> EventLog:
        """The same events, as ``onto``'s base (shared) plus one batch of the rows that differ from it.

        One pass over every event. ``onto`` must hold no event this log lacks (an
        older state of the same history).
        """
        now = self.frame()
        base = onto._parts[0]
        if onto._parts[1]:
            onto.frame()
            base = onto._parts[0]
        at = base.ids().get_indexer(now["event_id"].to_numpy(dtype=object))
        old = base.frame.iloc[at[at >= 0]].reset_index(drop=True)
        both = now[at >= 0].reset_index(drop=True)
        same = np.ones(len(both), dtype=bool)
        for c in now.columns:
            a, b = both[c], old[c]
            same &= (a.eq(b) | (a.isna() & b.isna())).to_numpy()
        diff = pd.concat([now[at < 0], both[~same]], ignore_index=True)
        batches = (diff,) if len(diff) else ()
        return EventLog(base.frame, _base=base, _batches=batches, _replaced=int((~same).sum()))

    def without_appended(self, user_ids: set[str]) -> EventLog:
        """A new log without the rows of ``user_ids`` appended after the base; their base rows stay.

        Costs a pass over the appended rows only.
        """
        base, batches, replaced = self._parts
        wanted = pd.Index(list(user_ids), dtype=object)
        kept: list[pd.DataFrame] = []
        gone: list[pd.DataFrame] = []
        for b in batches:
            drop = b["user_id"].isin(wanted).to_numpy()
            gone.append(b[drop])
            if (~drop).any():
                kept.append(b[~drop].reset_index(drop=True))
        if not any(len(g) for g in gone):
            return self
        ids = pd.concat(gone, ignore_index=True)["event_id"].drop_duplicates()
        # Rows that superseded an older one: every row of an id in the base, all but the first otherwise.
        superseding = sum(len(g) for g in gone) - int(
            (base.ids().get_indexer(ids.to_numpy(dtype=object)) < 0).sum()
        )
        return EventLog(base.frame, _base=base, _batches=tuple(kept), _replaced=replaced - superseding)

    def for_users(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """Events of ``user_ids``, sorted by user then time, as ``frame()`` would order them."""
        base, batches, replaced = self._parts
        ranges = base.ranges()
        spans = [ranges[u] for u in dict.fromkeys(user_ids) if u in ranges]
        part = base.frame.iloc[_ranges_index(sorted(spans))]
        if not batches:
            return part.reset_index(drop=True)
        wanted = pd.Index(list(user_ids), dtype=object)
        extra = [b[b["user_id"].isin(wanted).to_numpy()] for b in batches]
        merged = _latest(pd.concat([part, *extra], ignore_index=True), replaced)
        return merged.sort_values(_SORT, kind="stable").reset_index(drop=True)


def _latest(frame: pd.DataFrame, replaced: int) -> pd.DataFrame:
    """``frame`` (in log order) keeping only the last row of each id, when any row was replaced."""
    if not replaced:
        return frame
    return frame.drop_duplicates("event_id", keep="last")
