"""Request and response bodies of the SONA HTTP API (flat JSON objects).

Pydantic checks shapes and types, so a bad body is a 422 naming the field (and
the index inside ``viewing_events``); domain rules (timezone-aware timestamps,
known content) are checked by ``sona`` itself and map to 4xx through the shared
error table. The models are the OpenAPI contract: ids follow the one
:data:`~sona.identifiers.Identifier` rule, closed choices are enums, numbers
carry their bounds, and body booleans and numbers are strict (``0`` is not
``false``, ``false`` is not ``0``), so what the schema allows the server accepts.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from playback_bridge import MAX_SECONDS
from sona.events import RATING_MAX
from sona.identifiers import Identifier

__all__ = [
    "DeviceType",
    "ErrorBody",
    "Identifier",
    "JobResponse",
    "Mood",
    "ProfileUpdateRequest",
    "ProfileUpdateResponse",
    "ReadyResponse",
    "RecommendationItem",
    "RecommendationsRequest",
    "RecommendationsResponse",
    "ScoreRequest",
    "ScoreResponse",
    "ScoredContent",
    "StatusResponse",
    "StrictBool",
    "StrictFloat",
    "StrictInt",
    "TIMESTAMP_PATTERN",
    "TimeOfDay",
    "Timestamp",
    "TrainAccepted",
    "TrainRequest",
    "ViewingContext",
    "ViewingEventIn",
    "json_integer",
]

#: JSON booleans only: ``0``/``1``/``"true"`` are 422 (a ``"force": 0`` once queued a real job).
StrictBool = Annotated[bool, Strict()]


def json_integer(value: object) -> object:
    """``12.0`` → ``12`` (a ``BeforeValidator``); anything else unchanged, for the strict check after it."""
    # JSON Schema counts 12.0 as an integer, so the server does too; true, "12" and 1.5 stay errors.
    return int(value) if type(value) is float and value.is_integer() else value


#: JSON integers only (``12.0`` counts, as in JSON Schema), never ``true``, ``"12"`` or ``1.5``.
StrictInt = Annotated[int, BeforeValidator(json_integer), Strict()]
#: JSON numbers only, never ``false`` or ``"0.5"``; integers are numbers.
StrictFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]

#: The engine's day parts, devices and moods (``sona.features``; a test keeps them equal).
TimeOfDay = Literal["night", "morning", "afternoon", "evening"]
DeviceType = Literal["tv", "desktop", "tablet", "mobile"]
Mood = Literal["relaxed", "excited", "thoughtful", "scared", "happy", "sad"]

UserIdField = Field(description="The user the request is about.")

# Years sona can store (pandas datetime64[ns] holds 1677-09-21 to 2262-04-11; any UTC offset
# keeps 1678-2261 inside it), then an RFC 3339 date-time with an explicit offset.
_YEARS = r"(?:16(?:7[89]|[89]\d)|1[7-9]\d\d|2[01]\d\d|22[0-5]\d|226[01])"
TIMESTAMP_PATTERN = (
    rf"^{_YEARS}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[Tt](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_TIMESTAMP_RULE = "an RFC 3339 date-time with a UTC offset, years 1678 to 2261, e.g. 2026-03-01T20:15:00Z"


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or _TIMESTAMP.match(value) is None:
        raise PydanticCustomError("timestamp", "must be {rule}", {"rule": _TIMESTAMP_RULE})
    return value


#: A timestamp as the schema states it: no Unix seconds, no naive or date-only values.
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": _TIMESTAMP_RULE[0].upper() + _TIMESTAMP_RULE[1:] + ".",
        }
    ),
]


class ErrorBody(BaseModel):
    """Every 4xx/5xx body. Some errors add typed fields (``field``/``index``, ``reason``, counts)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="A stable, machine-readable code such as ``unknown_user``.")
    message: str = Field(description="What went wrong, for a human.")
    request_id: str = Field(description="Also in the ``X-Request-ID`` header; quote it in bug reports.")


class _Body(BaseModel):
    """Unknown fields are refused so a typo (``limt``) is a 422, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class ViewingContext(_Body):
    """Where and how the user is watching; every part optional."""

    mood: Mood | None = None
    time_of_day: TimeOfDay | None = None
    device_type: DeviceType | None = None
    viewing_with: Identifier | None = Field(default=None, description="Accepted, not used for ranking yet.")


class RecommendationsRequest(_Body):
    user_id: Identifier = UserIdField
    limit: StrictInt = Field(default=20, ge=1, le=100)
    exclude_watched: StrictBool = True
    diversity_threshold: StrictFloat | None = Field(
        default=None, ge=0.0, le=1.0, description="MMR trade-off: 0 is pure relevance."
    )
    context: ViewingContext | None = None


class RecommendationItem(BaseModel):
    content_id: str
    confidence_score: float = Field(
        ge=0.0,
        le=1.0,
        description="Calibrated probability that the user watches this title among their next viewings "
        "(about the next 10% of their history), fitted on held-out data (Platt scaling). With thousands of "
        "titles, 0.01-0.1 is typical: 0.05 means about 1 in 20. Recommendations are ranked by it.",
    )
    recommendation_type: str
    based_on: list[str]
    explanation: str


class RecommendationsResponse(BaseModel):
    recommendations: list[RecommendationItem]
    generated_at: datetime
    ttl_seconds: int


class ScoreRequest(_Body):
    """Exactly one of ``content_id`` or ``content_ids`` (the schema says so with ``oneOf``)."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["content_id"]}, {"required": ["content_ids"]}]}
    )

    user_id: Identifier = UserIdField
    # Not nullable: leave the other one out. (``SkipJsonSchema`` would hide ``null`` from the
    # schema while the server took it; the validator refuses an explicit null instead.)
    content_id: Identifier = Field(default=None, description="One title to score.")  # type: ignore[assignment]
    content_ids: list[Identifier] = Field(  # type: ignore[assignment]
        default=None, min_length=1, max_length=1000, description="Several titles to score."
    )

    @model_validator(mode="after")
    def _one_target(self) -> ScoreRequest:
        for name in ("content_id", "content_ids"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"'{name}' may not be null; leave it out instead")
        if (self.content_id is None) == (self.content_ids is None):
            raise ValueError("give exactly one of 'content_id' or 'content_ids'")
        return self

    @property
    def targets(self) -> list[str]:
        return [self.content_id] if self.content_id is not None else list(self.content_ids or ())


class ScoredContent(BaseModel):
    content_id: str
    score: float = Field(ge=0.0, le=1.0)
    components: dict[str, float]


class ScoreResponse(BaseModel):
    """``scores`` always; the single-title fields too when the request named one title."""

    user_id: str
    scores: list[ScoredContent]
    content_id: str | None = None
    score: float | None = None
    components: dict[str, float] | None = None


class ViewingEventIn(_Body):
    #: The client's idempotency key, unique per user: a retry with the same key is ignored.
    event_id: Identifier | None = None
    content_id: Identifier
    timestamp: Timestamp
    completion_rate: StrictFloat = Field(ge=0.0, le=1.0)
    watch_seconds: StrictFloat = Field(default=0.0, ge=0.0, le=MAX_SECONDS)
    # The scale is sona's (0 < rating <= RATING_MAX, half stars too); sona checks it and says so, the
    # schema states it (numeric keywords beside ``anyOf`` apply to the number, not to null).
    rating: StrictFloat | None = Field(
        default=None, json_schema_extra={"exclusiveMinimum": 0, "maximum": RATING_MAX}
    )
    dismissed: StrictBool = False
    is_rewatch: StrictBool = False


class ProfileUpdateRequest(_Body):
    user_id: Identifier = UserIdField
    viewing_events: list[ViewingEventIn] = Field(min_length=1, max_length=1000)


class ProfileUpdateResponse(BaseModel):
    status: Literal["updated"]
    user_id: str
    events_processed: int
    duplicates_ignored: int
    preference_vector_dim: int


class TrainRequest(_Body):
    user_id: Identifier = UserIdField
    force: StrictBool = Field(default=False, description="Skip the minimum-interval guard.")


class TrainAccepted(BaseModel):
    job_id: str
    user_id: str
    status: Literal["queued"]


class JobResponse(BaseModel):
    job_id: str
    user_id: str
    status: Literal["queued", "running", "succeeded", "failed", "skipped"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    events_used: int | None
    duration_seconds: float | None
    adapter_version: int | None
    error: str | None


class StatusResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]
