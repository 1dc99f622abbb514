"""Temporal per-user splits: the test set is each user's future."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sona.errors import ValidationError
from sona.events import validate_events

__all__ = ["temporal_split"]


def temporal_split(events: pd.DataFrame, test_fraction: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each user's events by time: the last ``test_fraction`` of them is test.

    A user with n events keeps ``max(1, floor(n * (1 - test_fraction)))`` in
    train, so every user stays known to the model; users with one event have
    no test part. Ties in time keep input order (stable sort).

    Returns
    -------
    (train, test)
        Both in the canonical events layout.
    """
    if isinstance(test_fraction, bool) or not 0.0 < float(test_fraction) < 1.0:
        raise ValidationError("test_fraction", f"must be in (0, 1), got {test_fraction!r}")
    frame = validate_events(events, allow_empty=False)
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    pos = frame.groupby("user_id", sort=False).cumcount().to_numpy()
    n = frame.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
    n_train = np.maximum(1, np.floor(n * (1.0 - float(test_fraction))).astype(np.int64))
    is_test = pos >= n_train
    return frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)
