"""What a search returns: one page of scored hits plus facets over all hits."""

from __future__ import annotations

from dataclasses import dataclass, field

from sona.catalog import ContentItem

__all__ = ["Facets", "SearchHit", "SearchPage"]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One result. ``relevance_score`` orders the page; the other scores explain it.

    ``keyword_score`` is the raw BM25 score, ``vector_similarity`` the cosine of query
    and title embeddings (``None`` when that signal is off), ``personalization_score``
    the personalizer's [0, 1] score (``None`` for anonymous callers).
    """

    content: ContentItem
    relevance_score: float
    match_reasons: tuple[str, ...]
    keyword_score: float | None
    vector_similarity: float | None
    personalization_score: float | None


@dataclass(frozen=True, slots=True)
class Facets:
    """Counts over every hit of the query (all pages), after filters."""

    genres: dict[str, int] = field(default_factory=dict)
    years: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One page of results. A page past the end has no hits but the true ``total_count``."""

    hits: tuple[SearchHit, ...]
    total_count: int
    page: int
    page_size: int
    facets: Facets
    search_time_ms: float
    personalized: bool = False
    personalization_weight: float = 0.0
