"""A user's learned profile: what the features compute and storage persists."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from sona._ids import UserId

__all__ = ["UserProfile"]


@dataclass(slots=True)
class UserProfile:
    """Preference vector, genre affinities and temporal patterns of one user.

    ``temporal_patterns`` holds ``hourly`` (24), ``weekday`` (7) and ``seasonal``
    (4) distributions plus ``recency_bias`` (a one-element list), so it stores
    as plain JSON.
    """

    user_id: UserId
    preference_vector: npt.NDArray[np.float32]
    genre_affinities: dict[str, float] = field(default_factory=dict)
    temporal_patterns: dict[str, list[float]] = field(default_factory=dict)
    interaction_count: int = 0
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
