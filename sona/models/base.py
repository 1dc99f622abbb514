"""The contract every sona recommender and baseline follows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable

import pandas as pd

__all__ = ["Recommender"]


@runtime_checkable
class Recommender(Protocol):
    """``fit`` on an events frame, ``observe`` more events, rank titles for many users at once."""

    def fit(self, events: pd.DataFrame) -> Self:
        """Learn from scratch; a second call replaces everything learned by the first."""
        ...

    def observe(self, events: pd.DataFrame) -> Self:
        """Fold in new events for known or new users without refitting shared weights."""
        ...

    def recommend_batch(
        self, user_ids: Sequence[str], k: int = 10, *, exclude_watched: bool = True
    ) -> pd.DataFrame:
        """Top-k per user as a frame with columns ``user_id, rank, content_id, score``."""
        ...
