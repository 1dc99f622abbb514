"""A batch of position/ended observations as columns, and its fast decoder.

The consumer's hot path. Building one pydantic model per Kafka message cost
about 8 µs, most of the consumer's time; here a batch is parsed with
pydantic-core's JSON parser (about 1.5 µs a message) and checked column-wise
with rules at least as strict as the :mod:`playback_bridge._messages` models.
A message that fails any column check is handed to :func:`decode_event`, so
poison reasons are exactly the models' and a message the models accept but the
fast checks did not (a numeric string, a missing optional field) still counts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from pandas._libs import lib
from pydantic_core import from_json

from playback_bridge._messages import (
    MAX_SECONDS,
    SCHEMA_VERSION,
    TIMESTAMP_RANGE,
    EventType,
    PlaybackState,
    PoisonMessageError,
    PositionUpdated,
    SessionCreated,
    SessionEnded,
    decode_event,
)
from sona.identifiers import IDENTIFIER_MAX_LENGTH, NOT_PRINTABLE_CHARACTER

__all__ = ["PlaybackBatch", "decode_batch"]

log = logging.getLogger(__name__)

AnyEvent = SessionCreated | PositionUpdated | SessionEnded

_IDS = ("session_id", "user_id", "content_id", "device_id")
_POSITION = {
    EventType.POSITION_UPDATED.value: "position_seconds",
    EventType.SESSION_ENDED.value: "final_position_seconds",
}
_STATES = frozenset(s.value for s in PlaybackState)
_ENDED = EventType.SESSION_ENDED.value
_STATE_ENDED = PlaybackState.ENDED.value
# ISO-8601 with an explicit offset, as producers write it; anything else goes to the model.
_TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)"
# Years the fast path accepts: a year inside the models' range on both sides, so no UTC offset can
# carry a stamp out of it (or out of what datetime64[ns] holds); the edge years go to the model.
_YEARS = (TIMESTAMP_RANGE[0].year + 1, TIMESTAMP_RANGE[1].year - 2)
_CONTROL = NOT_PRINTABLE_CHARACTER  # the identifier rule's characters (sona.identifiers)
COLUMNS = (
    "session_id",
    "user_id",
    "content_id",
    "timestamp",
    "position_seconds",
    "duration_seconds",
    "final",
)


@dataclass(frozen=True, slots=True)
class PlaybackBatch:
    """Position updates and session ends of one batch, one row each, as columns.

    ``frame`` has :data:`COLUMNS`: ids (object), ``timestamp``
    (``datetime64[ns, UTC]``), ``position_seconds`` and ``duration_seconds``
    (float64) and ``final`` (bool: a session-ended event, or a position update
    in state ``ended``). Its index is each row's position in the input, so a
    refused row maps back to its message. Session-created events carry no
    position and are left out.
    """

    frame: pd.DataFrame

    @classmethod
    def from_events(cls, events: Sequence[AnyEvent]) -> PlaybackBatch:
        """From decoded event models (the in-process bus hands these over)."""
        keep = [(i, e) for i, e in enumerate(events) if not isinstance(e, SessionCreated)]
        return cls(_frame_from_models(keep))

    def __len__(self) -> int:
        return len(self.frame)

    def take(self, labels: Sequence[int] | npt.NDArray[np.int64]) -> PlaybackBatch:
        """The rows with these index labels (input positions)."""
        return PlaybackBatch(self.frame.loc[list(labels)])


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session_id": pd.Series(dtype=object),
            "user_id": pd.Series(dtype=object),
            "content_id": pd.Series(dtype=object),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            "position_seconds": pd.Series(dtype=np.float64),
            "duration_seconds": pd.Series(dtype=np.float64),
            "final": pd.Series(dtype=bool),
        }
    )


def _frame_from_models(rows: Sequence[tuple[int, AnyEvent]]) -> pd.DataFrame:
    if not rows:
        return _empty()
    events = [e for _, e in rows]
    final = [
        isinstance(e, SessionEnded)
        or (isinstance(e, PositionUpdated) and e.playback_state is PlaybackState.ENDED)
        for e in events
    ]
    return pd.DataFrame(
        {
            "session_id": [e.session_id for e in events],
            "user_id": [e.user_id for e in events],
            "content_id": [e.content_id for e in events],
            "timestamp": pd.to_datetime([e.timestamp for e in events], utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            "position_seconds": np.array(
                [
                    e.final_position_seconds if isinstance(e, SessionEnded) else e.position_seconds
                    for e in events
                ],  # type: ignore[union-attr]
                dtype=np.float64,
            ),
            "duration_seconds": np.array([e.duration_seconds for e in events], dtype=np.float64),  # type: ignore[union-attr]
            "final": np.array(final, dtype=bool),
        },
        index=pd.Index([i for i, _ in rows], dtype=np.int64),
    )


def _parse(value: bytes | None) -> object:
    if value is None:
        return None
    try:
        return from_json(value)
    except ValueError:
        return None


def _number(values: list[object]) -> npt.NDArray[np.float64]:
    # JSON numbers only (bool is an int subclass and is refused); anything else is NaN → checked by the model.
    return np.fromiter(
        (v if (type(v) is float or type(v) is int) else np.nan for v in values),
        dtype=np.float64,
        count=len(values),
    )


def _valid_ids(values: list[object]) -> npt.NDArray[np.bool_]:
    """``str`` of 1-255 printable characters, not all whitespace (the models' ``Identifier``)."""
    n = len(values)
    arr = np.array(values, dtype=object)
    # ndim: equal-length lists make a 2-D array whose cells are strings.
    if n and arr.ndim == 1 and lib.is_string_array(arr):  # the usual case: C-level maps, no Python frame
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)  # type: ignore[arg-type]
        blank = np.fromiter(map(str.isspace, values), dtype=bool, count=n)  # type: ignore[arg-type]
        valid = (lengths > 0) & (lengths <= IDENTIFIER_MAX_LENGTH) & ~blank
        if _CONTROL.search("".join(values)):  # type: ignore[arg-type]  # rare: one scan finds none
            valid &= ~np.fromiter(map(bool, map(_CONTROL.search, values)), dtype=bool, count=n)  # type: ignore[arg-type]
        return valid
    return np.fromiter(
        (
            type(v) is str
            and 0 < len(v) <= IDENTIFIER_MAX_LENGTH
            and not v.isspace()
            and _CONTROL.search(v) is None
            for v in values
        ),
        dtype=bool,
        count=n,
    )


def decode_batch(values: Sequence[bytes | None]) -> tuple[PlaybackBatch, list[tuple[int, str]]]:
    """Decode message values into a :class:`PlaybackBatch` plus ``(position, reason)`` of each poison message.

    Session-created events are valid but carry no position: they are neither
    in the batch nor poison. Never raises: if the column-wise decoder fails on
    an input nobody foresaw, the batch is decoded one message at a time and a
    message that still cannot be turned into a row is poison, so one bad
    message can never stop a partition.
    """
    try:
        return _decode_columns(values)
    except Exception:
        log.exception("column-wise decoding failed; decoding the %d messages one by one", len(values))
    poison: list[tuple[int, str]] = []
    frames: list[pd.DataFrame] = []
    for i, value in enumerate(values):
        try:
            event = decode_event(value)
            if not isinstance(event, SessionCreated):
                frames.append(_frame_from_models([(i, event)]))
        except PoisonMessageError as exc:
            poison.append((i, exc.reason))
        except Exception as exc:
            poison.append((i, f"undecodable: {type(exc).__name__}: {exc}"))
    frame = pd.concat(frames) if frames else _empty()
    return PlaybackBatch(frame), poison


def _decode_columns(values: Sequence[bytes | None]) -> tuple[PlaybackBatch, list[tuple[int, str]]]:
    """The fast path of :func:`decode_batch`; may raise on inputs it does not foresee."""
    n = len(values)
    parsed = [_parse(v) for v in values]
    docs = [p if type(p) is dict else {} for p in parsed]
    kind = [d.get("event_type") for d in docs]
    ok = np.fromiter(
        (type(d.get("schema_version")) is int and d.get("schema_version") == SCHEMA_VERSION for d in docs),
        dtype=bool,
        count=n,
    )
    ok &= np.fromiter((type(k) is str and k in _POSITION for k in kind), dtype=bool, count=n)
    for name in _IDS:
        ok &= _valid_ids([d.get(name) for d in docs])
    ended = np.array([k == _ENDED for k in kind], dtype=bool)
    fields = [_POSITION.get(k, "position_seconds") if type(k) is str else "position_seconds" for k in kind]
    position = _number([d.get(f) for d, f in zip(docs, fields, strict=True)])
    duration = _number([d.get("duration_seconds") for d in docs])
    completion = _number([d.get("completion_rate") if e else 0.0 for d, e in zip(docs, ended, strict=True)])
    state = [d.get("playback_state") for d in docs]
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(position) & (position >= 0) & (position <= MAX_SECONDS)
        ok &= np.isfinite(duration) & (duration >= 0) & (duration <= MAX_SECONDS)
        ok &= np.isfinite(completion) & (completion >= 0) & (completion <= 1)
    ok &= ended | np.fromiter((type(s) is str and s in _STATES for s in state), dtype=bool, count=n)
    ok &= np.fromiter((type(d.get("event_id", "")) is str for d in docs), dtype=bool, count=n)
    stamps = pd.Series([d.get("timestamp") for d in docs], dtype=object)
    is_text = np.fromiter((type(t) is str for t in stamps), dtype=bool, count=n)
    ok &= is_text
    ok[ok] &= stamps[ok].str.fullmatch(_TIMESTAMP).to_numpy(dtype=bool)
    if ok.any():
        year = stamps[ok].str.slice(0, 4).astype(np.int64).to_numpy()
        ok[ok] &= (year >= _YEARS[0]) & (year <= _YEARS[1])
    timestamp = pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    if ok.any():
        timestamp[ok] = pd.to_datetime(stamps[ok], utc=True, format="ISO8601", errors="coerce")
        ok &= timestamp.notna().to_numpy()

    good = np.flatnonzero(ok)
    frame = pd.DataFrame(
        {
            "session_id": [docs[i]["session_id"] for i in good],
            "user_id": [docs[i]["user_id"] for i in good],
            "content_id": [docs[i]["content_id"] for i in good],
            "timestamp": pd.DatetimeIndex(timestamp.iloc[good]),
            "position_seconds": position[good],
            "duration_seconds": duration[good],
            "final": ended[good] | np.array([state[i] == _STATE_ENDED for i in good], dtype=bool).reshape(-1),
        },
        index=pd.Index(good, dtype=np.int64),
    )
    poison: list[tuple[int, str]] = []
    rescued: list[tuple[int, AnyEvent]] = []
    for i in np.flatnonzero(~ok):  # rare: the model decides, and words the reason
        try:
            event = decode_event(values[i])
        except PoisonMessageError as exc:
            poison.append((int(i), exc.reason))
            continue
        if not isinstance(event, SessionCreated):
            rescued.append((int(i), event))
    if rescued:
        frame = pd.concat([frame, _frame_from_models(rescued)]).sort_index()
    return PlaybackBatch(frame), poison
