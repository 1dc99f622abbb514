"""Every per-user feature at once, from raw event arrays: the engine's profile state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from sona.features._engagement import engagement_weight
from sona.features._interactions import interaction_matrix
from sona.features._preference import genre_affinities, preference_vectors
from sona.features._temporal import daypart_shares, recency_bias, temporal_patterns

__all__ = ["EventArrays", "ProfileState", "compute_profiles", "side_features"]


@dataclass(slots=True)
class EventArrays:
    """Column arrays of events, users and titles already mapped to positions."""

    user: npt.NDArray[np.int64]
    item: npt.NDArray[np.int64]
    seconds: npt.NDArray[np.float64]
    completion: npt.NDArray[np.float64]
    rating: npt.NDArray[np.float64]
    dismissed: npt.NDArray[np.bool_]

    def take(self, mask: npt.NDArray[np.bool_]) -> EventArrays:
        return EventArrays(*(getattr(self, f)[mask] for f in self.__slots__))  # type: ignore[attr-defined]


@dataclass(slots=True)
class ProfileState:
    """Per-user arrays, one row per user (positions in the engine's user index)."""

    weights: sp.csr_matrix  # (n_users, n_items) engagement x decay
    seen: sp.csr_matrix  # (n_users, n_items) 1 where the user has any event
    preference: npt.NDArray[np.float32]  # (n_users, dim)
    genre_affinity: npt.NDArray[np.float32]  # (n_users, n_genres)
    hourly: npt.NDArray[np.float32]  # (n_users, 24)
    weekday: npt.NDArray[np.float32]  # (n_users, 7)
    seasonal: npt.NDArray[np.float32]  # (n_users, 4)
    recency: npt.NDArray[np.float32]  # (n_users,)
    qualifying: npt.NDArray[np.int64]  # (n_users,) events with weight > 0
    last_seconds: npt.NDArray[np.float64]  # (n_users,) latest event, -inf if none


def compute_profiles(
    ev: EventArrays,
    n_users: int,
    n_items: int,
    *,
    content_embeddings: npt.NDArray[np.float32],
    genre_matrix: sp.csr_matrix,
    release_years: npt.NDArray[np.float32],
    min_completion: float,
    decay_base: float,
    decay_period_days: float,
    genre_smoothing: float,
) -> ProfileState:
    """Compute :class:`ProfileState` for users ``0..n_users-1`` from their events, in one pass."""
    w_event = engagement_weight(ev.completion, ev.rating, ev.dismissed, min_completion=min_completion)
    w = interaction_matrix(
        ev.user,
        ev.item,
        ev.seconds,
        w_event,
        (n_users, n_items),
        decay_base=decay_base,
        decay_period_days=decay_period_days,
    )
    seen = sp.csr_matrix(
        (np.ones(len(ev.user), dtype=np.float32), (ev.user, ev.item)), shape=(n_users, n_items)
    )
    seen.sum_duplicates()
    seen.data[:] = 1.0
    pats = temporal_patterns(ev.user, ev.seconds, n_users)
    last = np.full(n_users, -np.inf)
    np.maximum.at(last, ev.user, ev.seconds)
    return ProfileState(
        weights=w,
        seen=seen,
        preference=preference_vectors(w, content_embeddings),
        genre_affinity=genre_affinities(w, genre_matrix, alpha=genre_smoothing),
        hourly=pats["hourly"],
        weekday=pats["weekday"],
        seasonal=pats["seasonal"],
        recency=recency_bias(ev.user, ev.item, release_years, w_event, n_users),
        qualifying=np.bincount(ev.user[w_event > 0], minlength=n_users).astype(np.int64),
        last_seconds=last,
    )


def side_features(
    hourly: npt.NDArray[np.float32], recency: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """(n, 5) tower side input: day-part shares (4) and recency bias (1)."""
    return np.hstack([daypart_shares(hourly), recency[:, None]]).astype(np.float32)
