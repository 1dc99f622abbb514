"""How ``observe(on_conflict="max_progress")`` merges a playback session's later records into the log."""

from __future__ import annotations

import pandas as pd

from sona.engine._event_log import EventLog

__all__ = ["progressed"]

#: Columns a further-along observation of a stored event replaces (``observe(on_conflict="max_progress")``).
_PROGRESS = ("completion_rate", "watch_seconds", "timestamp")


def progressed(log: EventLog, frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows to append for ``max_progress``: unseen events, then advanced stored rows (and their count).

    Within ``frame`` an id keeps its furthest record. An advanced row is the
    stored row with the new progress columns, so it keeps its user and title.
    """
    frame = frame.sort_values(["completion_rate", "watch_seconds"], ascending=False, kind="stable")
    frame = frame.drop_duplicates("event_id").sort_index()
    stored = log.stored(frame["event_id"]).set_index("event_id", drop=False)
    known = frame["event_id"].isin(stored.index).to_numpy()
    seen = frame[known]
    old = stored.loc[seen["event_id"].to_numpy()]
    c_new, c_old = seen["completion_rate"].to_numpy(), old["completion_rate"].to_numpy()
    w_new, w_old = seen["watch_seconds"].to_numpy(), old["watch_seconds"].to_numpy()
    ahead = (c_new > c_old) | ((c_new == c_old) & (w_new > w_old))
    moved = old[ahead].reset_index(drop=True)
    for col in _PROGRESS:
        moved[col] = seen[col].array[ahead]
    fresh = frame[~known]
    return pd.concat([fresh, moved], ignore_index=True), len(moved)
