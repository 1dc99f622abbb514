"""The record a recommendation call returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sona._ids import ContentId

__all__ = ["Recommendation", "RecommendationType"]

#: Which source put a title on the list.
RecommendationType = Literal[
    "collaborative", "personalized", "content", "graph", "popular", "trending", "cold_start", "explore"
]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommended title.

    ``score`` is the personalization score in [0, 1]; ``based_on`` lists up to
    three of the user's titles that most support it (empty for cold start and
    popularity); ``explanation`` is one human-readable sentence.
    """

    content_id: ContentId
    score: float
    recommendation_type: RecommendationType
    based_on: tuple[ContentId, ...] = ()
    explanation: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "content_id": self.content_id,
            "score": self.score,
            "recommendation_type": self.recommendation_type,
            "based_on": list(self.based_on),
            "explanation": self.explanation,
        }
