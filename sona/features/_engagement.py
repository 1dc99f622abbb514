"""Engagement weights and temporal decay: how much one viewing says about taste."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["engagement_weight", "temporal_decay"]


def engagement_weight(
    completion_rate: npt.ArrayLike,
    rating: npt.ArrayLike | None = None,
    dismissed: npt.ArrayLike | None = None,
    *,
    min_completion: float = 0.3,
) -> npt.NDArray[np.float32]:
    """Weight of each event in [0, 2].

    The rule: below ``min_completion`` an event is ignored (0); otherwise the
    base weight is the completion rate, full completion (>= 0.95) is boosted
    x1.25, a rating >= 4 is boosted x1.5, a rating <= 2 is damped x0.5 and a
    dismissal penalized x0.2; the result is clamped to [0, 2]. Missing ratings
    (NaN) leave the weight unchanged.
    """
    c = np.asarray(completion_rate, dtype=np.float64)
    w = c.copy()
    w = np.where(c >= 0.95, w * 1.25, w)
    if rating is not None:
        r = np.asarray(rating, dtype=np.float64)
        w = np.where(r >= 4.0, w * 1.5, w)
        w = np.where(r <= 2.0, w * 0.5, w)  # NaN compares False: unchanged
    if dismissed is not None:
        w = np.where(np.asarray(dismissed, dtype=bool), w * 0.2, w)
    w = np.where(c < min_completion, 0.0, w)
    return np.clip(w, 0.0, 2.0).astype(np.float32)


def temporal_decay(
    age_days: npt.ArrayLike, *, base: float = 0.95, period_days: float = 30.0
) -> npt.NDArray[np.float32]:
    """``base ** (age_days / period_days)``; negative ages count as 0 (no boost for the future)."""
    age = np.clip(np.asarray(age_days, dtype=np.float64), 0.0, None)
    return np.power(base, age / period_days).astype(np.float32)
