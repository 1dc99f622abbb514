"""When users watch (hour, weekday, season) and how much they favour new releases."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["DAYPARTS", "daypart_shares", "recency_bias", "temporal_patterns"]

#: Day parts used as tower/context features: night, morning, afternoon, evening.
DAYPARTS: tuple[str, ...] = ("night", "morning", "afternoon", "evening")


def _distribution(
    user_idx: npt.NDArray[np.int64], bucket: npt.NDArray[np.int64], n_users: int, n_buckets: int, alpha: float
) -> npt.NDArray[np.float32]:
    counts = np.bincount(user_idx * n_buckets + bucket, minlength=n_users * n_buckets).reshape(
        n_users, n_buckets
    )
    out = (counts + alpha) / (counts.sum(axis=1, keepdims=True) + alpha * n_buckets)
    return out.astype(np.float32)


def temporal_patterns(
    user_idx: npt.NDArray[np.int64], seconds: npt.NDArray[np.float64], n_users: int, *, alpha: float = 0.5
) -> dict[str, npt.NDArray[np.float32]]:
    """Smoothed hourly (24), weekday (7, Monday = 0) and seasonal (4, DJF first) distributions per user.

    ``seconds`` are UTC epoch seconds. Users without events get uniform rows.
    """
    s = np.asarray(seconds, dtype=np.int64)
    days = s // 86400
    hour = (s % 86400) // 3600
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    month = np.asarray(days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12)
    season = ((month + 1) % 12) // 3
    return {
        "hourly": _distribution(user_idx, hour, n_users, 24, alpha),
        "weekday": _distribution(user_idx, weekday, n_users, 7, alpha),
        "seasonal": _distribution(user_idx, season, n_users, 4, alpha),
    }


def daypart_shares(hourly: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(n, 24) hourly distribution → (n, 4) shares of :data:`DAYPARTS` (0-6, 6-12, 12-18, 18-24 h)."""
    return hourly.reshape(len(hourly), 4, 6).sum(axis=2).astype(np.float32)


def recency_bias(
    user_idx: npt.NDArray[np.int64],
    item_idx: npt.NDArray[np.int64],
    release_years: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    n_users: int,
) -> npt.NDArray[np.float32]:
    """How much newer than the catalog average a user's weighted viewing is, in [-1, 1].

    ``release_years`` is per title (NaN when unknown) and is min-max scaled over
    the whole catalog, so a user's value never depends on other users' events;
    ``item_idx`` and ``weights`` are per event. 0 for users without dated titles.
    """
    y = np.asarray(release_years, dtype=np.float64)
    known = np.isfinite(y)
    if not known.any():
        return np.zeros(n_users, dtype=np.float32)
    lo, hi = np.nanmin(y), np.nanmax(y)
    scaled = np.where(known, (y - lo) / max(hi - lo, 1.0), np.nan)
    centered = np.nan_to_num(scaled - np.nanmean(scaled))[item_idx]
    w = np.where(known[item_idx], weights, 0.0)
    num = np.bincount(user_idx, weights=w * centered, minlength=n_users)
    den = np.bincount(user_idx, weights=w, minlength=n_users)
    out = np.divide(num, den, out=np.zeros(n_users), where=den > 0) * 2.0
    return np.clip(out, -1.0, 1.0).astype(np.float32)
