"""The wire contracts of the playback bridge, written down in one place.

Two contracts live here:

* **Playback events** (Kafka topics ``{prefix}.session-created``,
  ``{prefix}.position-updated``, ``{prefix}.session-ended``; message key =
  ``user_id`` so one consumer owns a user's events in order). JSON objects with
  ``event_type``, ``event_id`` (uuid4), ``schema_version`` (:data:`SCHEMA_VERSION`),
  ``session_id``, ``user_id``, ``content_id``, ``device_id``, ``timestamp``
  (ISO-8601 UTC) and per type:

  ===================  ============================================================
  session-created      ``duration_seconds``, ``quality``
  position-updated     ``position_seconds``, ``playback_state``, ``duration_seconds``
  session-ended        ``final_position_seconds``, ``completion_rate``, ``duration_seconds``
  ===================  ============================================================

  Enum values are lowercase. ``completion_rate = min(1, pos / dur)`` (0 when the
  duration is 0). ``duration_seconds`` also rides on position updates so the
  consumer can compute completion without looking the session up.

* **Sync progress** (:class:`SyncProgress`), the body the playback service POSTs
  to ``{SYNC_SERVICE_URL}/api/v1/sync/progress``. The original system's two
  callers disagreed with its receiver; this model is the only definition.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic import ValidationError as PydanticValidationError

from sona.identifiers import Identifier

__all__ = [
    "MAX_SECONDS",
    "SCHEMA_VERSION",
    "TIMESTAMP_RANGE",
    "EventType",
    "PlaybackEvent",
    "PlaybackState",
    "PoisonMessageError",
    "PositionUpdated",
    "Quality",
    "SessionCreated",
    "SessionEnded",
    "SyncProgress",
    "completion_rate",
    "decode_event",
    "encode_event",
    "viewing_event_id",
]

#: Version of the playback event payloads this code writes and accepts.
SCHEMA_VERSION: Final = 1


class Quality(StrEnum):
    """Requested stream quality."""

    AUTO = "auto"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    ULTRA = "ultra"


class PlaybackState(StrEnum):
    """What the player is doing. ``ended`` is set when the position reaches the duration."""

    PLAYING = "playing"
    PAUSED = "paused"
    BUFFERING = "buffering"
    ENDED = "ended"


class EventType(StrEnum):
    """Event kinds; each has its own topic ``{prefix}.{value}``."""

    SESSION_CREATED = "session-created"
    POSITION_UPDATED = "position-updated"
    SESSION_ENDED = "session-ended"


#: The longest duration or position a playback event may carry: a week, longer than any title or
#: live stream. A larger value is a client bug (``1e308``), and it would poison averages downstream.
MAX_SECONDS: Final = 7 * 24 * 3600.0
#: The timestamps a playback event may carry (UTC, end exclusive): what ``datetime64[ns]`` holds, with margin.
TIMESTAMP_RANGE: Final = (datetime(1678, 1, 1, tzinfo=UTC), datetime(2262, 1, 1, tzinfo=UTC))

_Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]


def completion_rate(position_seconds: float, duration_seconds: float) -> float:
    """``min(1, pos / dur)``, and 0 for a zero duration."""
    if duration_seconds <= 0:
        return 0.0
    return min(1.0, max(0.0, position_seconds / duration_seconds))


def viewing_event_id(session_id: str) -> str:
    """The ``ViewingEvent.event_id`` of a playback session: one viewing per session.

    Deterministic, so a replay after a crash maps to the same row and dedupes.
    """
    return hashlib.sha1(f"playback\x1f{session_id}".encode()).hexdigest()[:32]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: Literal[1] = SCHEMA_VERSION
    # Ids follow sona's one identifier rule (printable, 1-255 characters): PostgreSQL refuses NUL
    # in text, so a message carrying one could never be stored and would be retried forever.
    session_id: Identifier
    user_id: Identifier
    content_id: Identifier
    device_id: Identifier
    #: Timezone-aware; producers write UTC. (Not normalized on decode: ``astimezone`` per
    #: message cost a fifth of the consumer's time; the sink converts column-wise.)
    timestamp: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("timestamp")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        # Out of this range pandas (the consumer's batches, sona's storage) cannot represent it.
        low, high = TIMESTAMP_RANGE
        if not low <= value < high:
            raise ValueError(f"timestamp out of range [{low.isoformat()}, {high.isoformat()})")
        return value


class SessionCreated(_Event):
    """A playback session started."""

    event_type: Literal[EventType.SESSION_CREATED] = EventType.SESSION_CREATED
    duration_seconds: Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
    quality: Quality = Quality.AUTO


class PositionUpdated(_Event):
    """The player reported a position."""

    event_type: Literal[EventType.POSITION_UPDATED] = EventType.POSITION_UPDATED
    position_seconds: _Seconds
    playback_state: PlaybackState
    duration_seconds: _Seconds


class SessionEnded(_Event):
    """The session was closed; this is its final state."""

    event_type: Literal[EventType.SESSION_ENDED] = EventType.SESSION_ENDED
    final_position_seconds: _Seconds
    completion_rate: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    duration_seconds: _Seconds


PlaybackEvent = Annotated[SessionCreated | PositionUpdated | SessionEnded, Field(discriminator="event_type")]
_ADAPTER: TypeAdapter[SessionCreated | PositionUpdated | SessionEnded] = TypeAdapter(PlaybackEvent)


class PoisonMessageError(Exception):
    """A message cannot be decoded into a playback event; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_event(event: SessionCreated | PositionUpdated | SessionEnded) -> bytes:
    """Compact JSON bytes of an event (the Kafka message value)."""
    return event.model_dump_json().encode()


def decode_event(raw: bytes | None) -> SessionCreated | PositionUpdated | SessionEnded:
    """Parse and validate one message value.

    Raises
    ------
    PoisonMessageError
        Bad JSON, an unknown ``schema_version`` or ``event_type``, or invalid
        values; the reason names which.
    """
    if raw is None:
        raise PoisonMessageError("empty message value")
    try:
        # pydantic-core parses the JSON itself: about twice as fast as json.loads + validate_python.
        return _ADAPTER.validate_json(raw)
    except PydanticValidationError as exc:
        raise PoisonMessageError(_reason(raw, exc)) from None


def _reason(raw: bytes, exc: PydanticValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return f"bad JSON: {first['msg']}"
    data = json.loads(raw)
    if not isinstance(data, dict):
        return "message is not a JSON object"
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        return f"unknown schema_version {version!r} (expected {SCHEMA_VERSION})"
    if first["type"] == "union_tag_invalid":
        return f"unknown event_type {data.get('event_type')!r}"
    where = ".".join(str(p) for p in first["loc"][1:] or first["loc"]) or "message"
    return f"invalid value at {where}: {first['msg']}"


class SyncProgress(BaseModel):
    """Body of ``POST {SYNC_SERVICE_URL}/api/v1/sync/progress``, sent after each position update.

    ``state`` is a :class:`PlaybackState` value; ``timestamp`` is ISO-8601 UTC
    of the update. The receiver must accept unknown extra fields (forward
    compatibility); the sender never sends fewer than these seven.
    """

    model_config = ConfigDict(frozen=True)

    user_id: str
    content_id: str
    device_id: str
    position_seconds: float
    duration_seconds: float
    state: PlaybackState
    timestamp: datetime
