"""Checks of the engine's request arguments, shared by every public method that takes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from sona.errors import DataError, ValidationError
from sona.events import ViewingEvent, events_to_frame, validate_events

__all__ = ["Context", "OnConflict", "as_frame", "check_diversity", "check_k"]

#: Request context: ``time_of_day``, ``device_type``, ``mood``.
Context = Mapping[str, str]
#: What ``observe`` does with an ``event_id`` it already has.
OnConflict = Literal["ignore", "max_progress"]


def check_k(k: int) -> int:
    """``k`` as an int; anything but a positive integer raises :class:`ValidationError`."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValidationError("k", f"must be a positive integer, got {k!r}")
    return int(k)


def check_diversity(diversity: float) -> float:
    """The MMR lambda as a float in [0, 1]."""
    if isinstance(diversity, bool) or not isinstance(diversity, int | float) or not 0.0 <= diversity <= 1.0:
        raise ValidationError("diversity", f"must be a number in [0, 1], got {diversity!r}")
    return float(diversity)


def as_frame(events: pd.DataFrame | Sequence[ViewingEvent], *, allow_empty: bool) -> pd.DataFrame:
    """Validated event frame from a DataFrame or a list of :class:`ViewingEvent`."""
    if isinstance(events, pd.DataFrame):
        frame = validate_events(events, allow_empty=True)
    elif isinstance(events, Sequence) and all(isinstance(e, ViewingEvent) for e in events):
        frame = events_to_frame(events)
    else:
        raise DataError("events must be a pandas DataFrame or a list of ViewingEvent")
    if len(frame) == 0 and not allow_empty:
        raise DataError("events are empty: fit needs at least one viewing event")
    return frame
