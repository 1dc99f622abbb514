"""Request and response bodies of the SONA HTTP API (flat JSON objects).

Pydantic checks shapes and types, so a bad body is a 422 naming the field (and
the index inside ``viewing_events``); domain rules (ranges, timezone-aware
timestamps, known content) are checked by ``sona`` itself and map to 422
through the shared error table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "JobResponse",
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
    "TrainAccepted",
    "TrainRequest",
    "ViewingContext",
    "ViewingEventIn",
]

UserIdField = Field(min_length=1, max_length=255, description="The user the request is about.")
ContentIdField = Field(min_length=1, max_length=255)


class _Body(BaseModel):
    """Unknown fields are refused so a typo (``limt``) is a 422, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class ViewingContext(_Body):
    """Where and how the user is watching; every part optional."""

    mood: str | None = Field(default=None, max_length=64)
    time_of_day: str | None = Field(default=None, max_length=64)
    device_type: str | None = Field(default=None, max_length=64)
    viewing_with: str | None = Field(default=None, max_length=64)


class RecommendationsRequest(_Body):
    user_id: str = UserIdField
    limit: int = Field(default=20, ge=1, le=100)
    exclude_watched: bool = True
    diversity_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="MMR trade-off: 0 is pure relevance."
    )
    context: ViewingContext | None = None


class RecommendationItem(BaseModel):
    content_id: str
    confidence_score: float = Field(ge=0.0, le=1.0)
    recommendation_type: str
    based_on: list[str]
    explanation: str


class RecommendationsResponse(BaseModel):
    recommendations: list[RecommendationItem]
    generated_at: datetime
    ttl_seconds: int


class ScoreRequest(_Body):
    """Exactly one of ``content_id`` or ``content_ids``."""

    user_id: str = UserIdField
    content_id: str | None = Field(default=None, min_length=1, max_length=255)
    content_ids: list[str] | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_target(self) -> ScoreRequest:
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
    event_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"\S")
    content_id: str = ContentIdField
    timestamp: datetime
    completion_rate: float
    watch_seconds: float = 0.0
    rating: float | None = None
    dismissed: bool = False
    is_rewatch: bool = False


class ProfileUpdateRequest(_Body):
    user_id: str = UserIdField
    viewing_events: list[ViewingEventIn] = Field(min_length=1, max_length=1000)


class ProfileUpdateResponse(BaseModel):
    status: Literal["updated"]
    user_id: str
    events_processed: int
    duplicates_ignored: int
    preference_vector_dim: int


class TrainRequest(_Body):
    user_id: str = UserIdField
    force: bool = Field(default=False, description="Skip the minimum-interval guard.")


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
