"""Viewing events: the one record every part of sona learns from.

Events travel in two shapes. :class:`ViewingEvent` is the validated record at
boundaries (HTTP bodies, Kafka messages). Bulk paths (datasets, ``fit``) use a
pandas DataFrame with :data:`EVENT_COLUMNS`, validated column-wise by
:func:`validate_events` so no Python loop runs over millions of rows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from sona._ids import ContentId, UserId
from sona.errors import DataError, ValidationError

__all__ = [
    "EVENT_COLUMNS",
    "RATING_MAX",
    "ViewingEvent",
    "client_event_id",
    "events_from_records",
    "events_to_frame",
    "make_event_id",
    "validate_events",
]

#: Columns of an events DataFrame, in order. ``event_id`` may be absent on input.
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "content_id",
    "timestamp",
    "completion_rate",
    "watch_seconds",
    "rating",
    "dismissed",
    "is_rewatch",
    "source",
)

_REQUIRED = ("user_id", "content_id", "timestamp", "completion_rate")

#: Ratings are on one five-star scale, half stars included: ``0 < rating <= RATING_MAX``.
#: One scale, because engagement reads 4+ as liked and 2- as disliked (see
#: :func:`sona.features.engagement_weight`). Sources on other scales map onto it
#: linearly, ``rating * RATING_MAX / their_max`` (7/10 becomes 3.5); "no rating" is null, not 0.
RATING_MAX = 5.0
_RATING_RULE = f"must be in (0, {RATING_MAX:g}] (five-star scale; null when unrated)"


def make_event_id(user_id: str, content_id: str, timestamp: datetime, source: str = "") -> str:
    """Deterministic id for events that arrive without one, so replays dedupe."""
    key = f"{user_id}\x1f{content_id}\x1f{timestamp.isoformat()}\x1f{source}"
    return hashlib.sha1(key.encode()).hexdigest()[:32]


def client_event_id(user_id: str, key: str) -> str:
    """The stored id of an event a client sent with its own idempotency ``key``.

    Clients pick keys per user ("1", "2", ...), but stored event ids are unique
    across all users; the digest of (user, key) keeps one user's key from
    swallowing another user's event as a duplicate, and a retry still dedupes.
    """
    return "k" + hashlib.sha1(f"{user_id}\x1f{key}".encode()).hexdigest()[:31]


#: Timestamps must fit the event frame's ``datetime64[ns]`` column (years 1677-2262).
_TS_MIN, _TS_MAX = pd.Timestamp.min.tz_localize(UTC), pd.Timestamp.max.tz_localize(UTC)
_OUT_OF_RANGE = f"must be between {_TS_MIN.isoformat()} and {_TS_MAX.isoformat()}"


def _utc(value: datetime | str | float | int, field_name: str, index: int | None) -> datetime:
    if isinstance(value, bool):
        raise ValidationError(field_name, "must be a timestamp", index=index)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValidationError(field_name, "must be finite", index=index)
        try:
            value = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, ValueError, OSError) as exc:
            raise ValidationError(field_name, f"{_OUT_OF_RANGE}, got {value!r}", index=index) from exc
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValidationError(field_name, f"not an ISO-8601 timestamp: {value!r}", index=index) from exc
    if not isinstance(value, datetime):
        raise ValidationError(field_name, "must be a timestamp", index=index)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field_name, "must be timezone-aware", index=index)
    try:
        value = value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValidationError(field_name, f"{_OUT_OF_RANGE}, got {value!r}", index=index) from exc
    if not _TS_MIN <= value <= _TS_MAX:
        raise ValidationError(field_name, f"{_OUT_OF_RANGE}, got {value.isoformat()}", index=index)
    return value


@dataclass(frozen=True, slots=True)
class ViewingEvent:
    """One viewing of one title by one user.

    ``completion_rate`` is in [0, 1]; ``rating`` is in (0, 5] (half stars too) or None;
    ``timestamp`` is timezone-aware and normalized to UTC. Invalid values raise
    :class:`~sona.errors.ValidationError` naming the field.
    """

    user_id: UserId
    content_id: ContentId
    timestamp: datetime
    completion_rate: float
    watch_seconds: float = 0.0
    rating: float | None = None
    dismissed: bool = False
    is_rewatch: bool = False
    source: str = "api"
    event_id: str = field(default="")

    def __post_init__(self) -> None:
        self._check(None)

    def _check(self, index: int | None) -> None:
        set_ = object.__setattr__
        for name in ("user_id", "content_id"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
                set_(self, name, value)
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(name, "must be a non-empty string", index=index)
        set_(self, "timestamp", _utc(self.timestamp, "timestamp", index))
        cr = self.completion_rate
        if isinstance(cr, bool) or not isinstance(cr, int | float) or not math.isfinite(cr):
            raise ValidationError("completion_rate", "must be a number", index=index)
        if not 0.0 <= cr <= 1.0:
            raise ValidationError("completion_rate", f"must be in [0, 1], got {cr}", index=index)
        ws = self.watch_seconds
        if isinstance(ws, bool) or not isinstance(ws, int | float) or not math.isfinite(ws) or ws < 0:
            raise ValidationError("watch_seconds", f"must be a number >= 0, got {ws!r}", index=index)
        r = self.rating
        if r is not None:
            if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r):
                raise ValidationError("rating", "must be a number or null", index=index)
            if not 0.0 < r <= RATING_MAX:
                raise ValidationError("rating", f"{_RATING_RULE}, got {r}", index=index)
        for name in ("dismissed", "is_rewatch"):
            if not isinstance(getattr(self, name), bool):
                raise ValidationError(name, "must be a boolean", index=index)
        if self.event_id is None or not str(self.event_id).strip():  # a blank id counts as none
            set_(
                self,
                "event_id",
                make_event_id(self.user_id, self.content_id, self.timestamp, self.source),
            )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def events_from_records(records: Sequence[dict[str, object]]) -> list[ViewingEvent]:
    """Validate a whole batch before anything is used; the error names the index."""
    out: list[ViewingEvent] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ValidationError("event", "must be an object", index=i)
        try:
            out.append(ViewingEvent(**rec))  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ValidationError(exc.field, exc.detail, index=i) from None
        except TypeError as exc:
            raise ValidationError("event", str(exc), index=i) from None
    return out


def events_to_frame(events: Iterable[ViewingEvent]) -> pd.DataFrame:
    """Turn validated events into the canonical events DataFrame."""
    rows = [e.to_dict() for e in events]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in EVENT_COLUMNS})
    return validate_events(pd.DataFrame(rows, columns=list(EVENT_COLUMNS)))


_DTYPES: dict[str, str] = {
    "event_id": "object",
    "user_id": "object",
    "content_id": "object",
    "timestamp": "datetime64[ns, UTC]",
    "completion_rate": "float64",
    "watch_seconds": "float64",
    "rating": "float64",
    "dismissed": "bool",
    "is_rewatch": "bool",
    "source": "object",
}


def _bad_row(mask: np.ndarray | pd.Series) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def validate_events(frame: pd.DataFrame, *, allow_empty: bool = True) -> pd.DataFrame:
    """Check and normalize an events DataFrame column-wise.

    Returns a new frame with every column of :data:`EVENT_COLUMNS`: ids as
    strings, ``timestamp`` as UTC datetimes (naive datetimes and epoch seconds
    are read as UTC), defaults filled for optional columns, and ``event_id``
    derived from (user, content, timestamp, source) when absent.

    Raises
    ------
    ValidationError
        Naming the column and the first offending row.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError("events must be a pandas DataFrame")
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValidationError(missing[0], "column is missing")
    if len(frame) == 0 and not allow_empty:
        raise DataError("events are empty")
    df = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for name in ("user_id", "content_id"):
        col = frame[name].reset_index(drop=True)
        if col.isna().any():
            raise ValidationError(name, "is missing", index=_bad_row(col.isna()))
        col = col.astype(str)
        empty = col.str.strip() == ""
        if empty.any():
            raise ValidationError(name, "must be non-empty", index=_bad_row(empty))
        df[name] = col.to_numpy(dtype=object)
    ts = frame["timestamp"].reset_index(drop=True)
    try:
        if pd.api.types.is_numeric_dtype(ts):
            if not np.isfinite(ts.to_numpy(dtype=float)).all():
                raise ValidationError("timestamp", "must be finite", index=_bad_row(~np.isfinite(ts)))
            ts = pd.to_datetime(ts, unit="s", utc=True)
        else:
            ts = pd.to_datetime(ts, utc=True, format="mixed")
        if ts.isna().any():
            raise ValidationError("timestamp", "is missing", index=_bad_row(ts.isna()))
        df["timestamp"] = ts.astype("datetime64[ns, UTC]")  # may be out of bounds: inside the try
    except (pd.errors.OutOfBoundsDatetime, OverflowError) as exc:
        raise ValidationError("timestamp", f"{_OUT_OF_RANGE}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise ValidationError("timestamp", f"cannot be parsed: {exc}") from exc

    def numeric(name: str, default: float | None) -> pd.Series:
        if name not in frame.columns:
            return pd.Series(np.full(len(frame), np.nan if default is None else default))
        try:
            return pd.to_numeric(frame[name].reset_index(drop=True), errors="raise").astype(float)
        except (ValueError, TypeError) as exc:
            raise ValidationError(name, f"must be numeric: {exc}") from exc

    cr = numeric("completion_rate", None)
    bad = ~((cr >= 0.0) & (cr <= 1.0))
    if bad.any():
        i = _bad_row(bad)
        raise ValidationError("completion_rate", f"must be in [0, 1], got {cr[i]}", index=i)
    df["completion_rate"] = cr.to_numpy()
    ws = numeric("watch_seconds", 0.0).fillna(0.0)
    bad = ~(ws >= 0) | ~np.isfinite(ws)
    if bad.any():
        i = _bad_row(bad)
        raise ValidationError("watch_seconds", f"must be >= 0, got {ws[i]}", index=i)
    df["watch_seconds"] = ws.to_numpy()
    rating = numeric("rating", None)
    bad = rating.notna() & ~((rating > 0.0) & (rating <= RATING_MAX))
    if bad.any():
        i = _bad_row(bad)
        raise ValidationError("rating", f"{_RATING_RULE}, got {rating[i]}", index=i)
    df["rating"] = rating.to_numpy()
    for name in ("dismissed", "is_rewatch"):
        if name in frame.columns:
            col = frame[name].reset_index(drop=True).fillna(False)
            if not pd.api.types.is_bool_dtype(col):
                ok = col.isin([True, False, 0, 1])
                if not ok.all():
                    raise ValidationError(name, "must be a boolean", index=_bad_row(~ok))
            df[name] = col.astype(bool).to_numpy()
        else:
            df[name] = np.zeros(len(frame), dtype=bool)
    if "source" in frame.columns:
        df["source"] = frame["source"].reset_index(drop=True).fillna("").astype(str).to_numpy(dtype=object)
    else:
        df["source"] = np.full(len(frame), "", dtype=object)
    given = (
        frame["event_id"].reset_index(drop=True)
        if "event_id" in frame.columns
        else pd.Series([None] * len(frame), dtype=object)
    )
    given = given.where(given.isna() | (given.astype(str).str.strip() != ""))  # blank ids: missing too
    if given.notna().all():
        df["event_id"] = given.astype(str).to_numpy(dtype=object)
    else:
        key = (
            df["user_id"]
            + "\x1f"
            + df["content_id"]
            + "\x1f"
            + df["timestamp"].map(lambda t: t.isoformat())
            + "\x1f"
            + df["source"]
        )
        derived = key.map(lambda k: hashlib.sha1(k.encode()).hexdigest()[:32])
        df["event_id"] = given.where(given.notna(), derived).astype(str).to_numpy(dtype=object)
    return df[list(EVENT_COLUMNS)]
