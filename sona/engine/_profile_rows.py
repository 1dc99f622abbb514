"""Rows of the engine's per-user profile state: computing, splicing and reading them.

``observe`` recomputes only the touched users' rows and splices them into
copies of the state arrays; ``forget`` takes rows back out; requests read rows
back as tower inputs or as :class:`~sona.profile.UserProfile` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from sona._ids import UserId
from sona.engine._fit_state import CatalogTables
from sona.engine._requests import Context
from sona.features import DAYPARTS, EventArrays, ProfileState, compute_profiles, daypart_onehot, side_features
from sona.models._config import SonaConfig
from sona.profile import UserProfile

__all__ = [
    "merge_profile_rows",
    "profile_state",
    "splice_rows",
    "take_rows",
    "tower_input_rows",
    "user_profiles",
]


def profile_state(
    cfg: SonaConfig,
    tables: CatalogTables,
    content_embeddings: npt.NDArray[np.float32],
    ev: EventArrays,
    n_users: int,
) -> ProfileState:
    """Profile rows of ``n_users`` users from their events (``ev.user`` are row positions)."""
    return compute_profiles(
        ev,
        n_users,
        tables.genre_matrix.shape[0],
        content_embeddings=content_embeddings,
        genre_matrix=tables.genre_matrix,
        release_years=tables.years,
        min_completion=cfg.min_completion,
        decay_base=cfg.decay_base,
        decay_period_days=cfg.decay_period_days,
        genre_smoothing=cfg.genre_smoothing,
    )


def take_rows(st: ProfileState, rows: npt.NDArray[np.int64]) -> ProfileState:
    """The state's rows ``rows``, in that order (new arrays)."""
    return ProfileState(**{f.name: getattr(st, f.name)[rows] for f in fields(ProfileState)})


def splice_rows(
    a: sp.csr_matrix, rows: npt.NDArray[np.int64], b: sp.csr_matrix, n_rows: int
) -> sp.csr_matrix:
    """CSR ``a`` grown to ``n_rows`` rows, with rows ``rows`` (sorted, unique) replaced by ``b``'s rows.

    Splices the index arrays directly (a few vectorized copies), instead of
    rebuilding the matrix through sparse products.
    """
    len_a = np.zeros(n_rows, dtype=np.int64)
    len_a[: a.shape[0]] = np.diff(a.indptr)
    drop = np.zeros(n_rows, dtype=bool)
    drop[rows] = True
    lens = np.where(drop, 0, len_a)
    lens[rows] = np.diff(b.indptr)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    old_row = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    keep = ~drop[old_row]
    dest_a = (indptr[old_row] + np.arange(a.nnz) - a.indptr[old_row])[keep]
    b_local = np.repeat(np.arange(len(rows)), np.diff(b.indptr))
    dest_b = indptr[rows[b_local]] + np.arange(b.nnz) - b.indptr[b_local]
    data = np.empty(int(indptr[-1]), dtype=a.dtype)
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    data[dest_a], indices[dest_a] = a.data[keep], a.indices[keep]
    data[dest_b], indices[dest_b] = b.data, b.indices
    out = sp.csr_matrix((data, indices, indptr), shape=(n_rows, a.shape[1]))
    out.has_sorted_indices = True
    return out


def merge_profile_rows(
    old: ProfileState, fresh: ProfileState, rows: npt.NDArray[np.int64], n_users: int
) -> ProfileState:
    """``old`` grown to ``n_users`` rows with rows ``rows`` (sorted) taken from ``fresh``.

    Every array is a new copy, so readers holding ``old`` never see half an
    update. Rows of users not seen yet start empty (``last_seconds`` at -inf).
    """
    grow = n_users - old.preference.shape[0]

    def dense(a: npt.NDArray[Any], b: npt.NDArray[Any], fill: float) -> npt.NDArray[Any]:
        a = np.concatenate([a, np.full((grow, *a.shape[1:]), fill, dtype=a.dtype)]) if grow else a.copy()
        a[rows] = b
        return a

    merged = {}
    for f in fields(ProfileState):
        a, b = getattr(old, f.name), getattr(fresh, f.name)
        if sp.issparse(a):
            merged[f.name] = splice_rows(a, rows, b, n_users)
        else:
            merged[f.name] = dense(a, b, -np.inf if f.name == "last_seconds" else 0.0)
    return ProfileState(**merged)


def tower_input_rows(
    st: ProfileState, rows: npt.NDArray[np.int64], context: Context | None
) -> npt.NDArray[np.float32]:
    """(batch, in_dim) tower input of state rows ``rows`` (-1 = unknown user: zero preference,
    uniform day parts); a ``context['time_of_day']`` replaces the day-part shares by a one-hot."""
    known = rows >= 0
    r = np.maximum(rows, 0)
    pref = np.where(known[:, None], st.preference[r], 0.0)
    side = side_features(st.hourly[r], st.recency[r])
    side[~known] = np.array([*(np.full(len(DAYPARTS), 1.0 / len(DAYPARTS))), 0.0], dtype=np.float32)
    tod = daypart_onehot(context)
    if tod is not None:
        side[:, : len(DAYPARTS)] = tod
    return np.hstack([pref, side]).astype(np.float32)


def user_profiles(
    st: ProfileState, rows: npt.NDArray[np.int64], user_ids: Sequence[str], genres: Sequence[str]
) -> list[UserProfile]:
    """:class:`UserProfile` objects of known users' state rows (builds result objects, no math)."""
    out = []
    for u, r in zip(user_ids, rows, strict=True):
        last = st.last_seconds[r]
        out.append(
            UserProfile(
                user_id=UserId(str(u)),
                preference_vector=st.preference[r].copy(),
                genre_affinities={g: float(v) for g, v in zip(genres, st.genre_affinity[r], strict=True)},
                temporal_patterns={
                    "hourly": st.hourly[r].tolist(),
                    "weekday": st.weekday[r].tolist(),
                    "seasonal": st.seasonal[r].tolist(),
                    "recency_bias": [float(st.recency[r])],
                },
                interaction_count=int(st.qualifying[r]),
                updated_at=datetime.fromtimestamp(last, tz=UTC) if np.isfinite(last) else datetime.now(UTC),
            )
        )
    return out
