"""The user × title weight matrix every profile feature is computed from."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from sona.features._engagement import temporal_decay

__all__ = ["interaction_matrix", "latest_per_user"]


def latest_per_user(
    user_idx: npt.NDArray[np.int64], seconds: npt.NDArray[np.float64], n_users: int
) -> npt.NDArray[np.float64]:
    """Latest event time of each user (``-inf`` for users without events)."""
    out = np.full(n_users, -np.inf)
    np.maximum.at(out, user_idx, seconds)
    return out


def interaction_matrix(
    user_idx: npt.NDArray[np.int64],
    item_idx: npt.NDArray[np.int64],
    seconds: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float32],
    shape: tuple[int, int],
    *,
    decay_base: float = 0.95,
    decay_period_days: float = 30.0,
) -> sp.csr_matrix:
    """(n_users, n_items) CSR of engagement x decay, duplicates summed and clipped to 2.

    Decay is measured from each user's *own* latest event, not a global "now".
    Profiles are normalized per user, so a global reference would only scale a
    user's row uniformly; the per-user reference keeps an update for one user
    from touching anyone else's row.
    """
    ref = latest_per_user(user_idx, seconds, shape[0])
    age = (ref[user_idx] - seconds) / 86400.0
    w = weights * temporal_decay(age, base=decay_base, period_days=decay_period_days)
    keep = w > 0
    m = sp.csr_matrix(
        (w[keep].astype(np.float32), (user_idx[keep], item_idx[keep])), shape=shape, dtype=np.float32
    )
    m.sum_duplicates()
    np.clip(m.data, 0.0, 2.0, out=m.data)
    m.eliminate_zeros()
    return m
