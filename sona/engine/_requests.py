"""Checks of the engine's request arguments, shared by every public method that takes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from sona.catalog import Catalog
from sona.errors import DataError, UnknownContentError, ValidationError
from sona.events import ViewingEvent, events_to_frame, validate_events

__all__ = [
    "Context",
    "OnConflict",
    "as_frame",
    "check_content_ids",
    "check_context",
    "check_diversity",
    "check_k",
    "check_titles",
    "check_user_id",
    "check_user_ids",
]

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
    """The MMR lambda as a float in [0, 1] (Python or NumPy numbers)."""
    if (
        isinstance(diversity, bool | np.bool_)
        or not isinstance(diversity, int | float | np.integer | np.floating)
        or not 0.0 <= diversity <= 1.0
    ):
        raise ValidationError("diversity", f"must be a number in [0, 1], got {diversity!r}")
    return float(diversity)


def check_context(context: Context | None) -> Context | None:
    """``context`` itself when it is a mapping (or None); anything else raises :class:`ValidationError`."""
    if context is not None and not isinstance(context, Mapping):
        raise ValidationError(
            "context", f"must be a mapping such as {{'time_of_day': 'evening'}}, got {type(context).__name__}"
        )
    return context


def check_user_id(user_id: str) -> str:
    """One user id as a string; None, empty and non-scalar ids raise :class:`ValidationError`.

    Integers are accepted (MovieLens ids) and read as their decimal string.
    """
    if isinstance(user_id, bool | np.bool_) or not isinstance(user_id, str | int | np.integer):
        raise ValidationError("user_id", f"must be a string, got {type(user_id).__name__}")
    uid = str(user_id)
    if not uid.strip():
        raise ValidationError("user_id", "must be a non-empty string")
    return uid


def check_user_ids(user_ids: Sequence[str]) -> list[str]:
    """Several user ids as strings. One string is refused rather than read as its characters."""
    if isinstance(user_ids, str | bytes):
        raise ValidationError("user_ids", f"must be a sequence of ids, not one string: use [{user_ids!r}]")
    if isinstance(user_ids, np.ndarray | pd.Series | pd.Index):
        user_ids = user_ids.tolist()
    if isinstance(user_ids, Mapping) or not isinstance(user_ids, Iterable):
        raise ValidationError("user_ids", f"must be a sequence of ids, got {type(user_ids).__name__}")
    out = []
    for i, u in enumerate(user_ids):
        try:
            out.append(check_user_id(u))
        except ValidationError as exc:
            raise ValidationError("user_ids", f"[{i}]: {exc.detail}") from None
    return out


def check_content_ids(content_ids: Sequence[str]) -> list[str]:
    """Title ids as a list; one string is one id; anything not iterable raises :class:`ValidationError`."""
    if isinstance(content_ids, str):
        return [content_ids]
    if isinstance(content_ids, np.ndarray | pd.Series | pd.Index):
        return content_ids.tolist()
    if isinstance(content_ids, bytes | Mapping) or not isinstance(content_ids, Iterable):
        raise ValidationError("content_ids", f"must be a sequence of ids, got {type(content_ids).__name__}")
    return list(content_ids)


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


def check_titles(catalog: Catalog, frame: pd.DataFrame) -> npt.NDArray[np.int64]:
    """Catalog positions of the events' titles; titles missing from the catalog raise
    :class:`UnknownContentError` naming (up to 20 of) them."""
    pos = catalog.lookup(frame["content_id"])
    if (pos < 0).any():
        raise UnknownContentError(sorted(set(frame["content_id"][pos < 0].astype(str)))[:20])
    return pos
