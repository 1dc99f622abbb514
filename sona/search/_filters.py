"""Search filters as vectorized boolean masks over per-title arrays.

Filters never touch SQL: the catalog is held as NumPy arrays and each filter is
one mask, so a query string can only ever be text to score, never code to run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sona.catalog import Catalog
from sona.errors import ValidationError

__all__ = ["CONTENT_RATINGS", "CatalogArrays", "SearchFilters", "filter_mask"]

#: Content ratings on one ordinal ladder (MPAA and US TV ratings side by side).
CONTENT_RATINGS: dict[str, int] = {
    "G": 0,
    "TV-Y": 0,
    "TV-G": 0,
    "TV-Y7": 1,
    "PG": 1,
    "TV-PG": 1,
    "PG-13": 2,
    "TV-14": 2,
    "R": 3,
    "TV-MA": 3,
    "NC-17": 4,
}
_UNRATED = 127


def _range(name: str, value: Sequence[float] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, str) or len(value) != 2:
        raise ValidationError(name, "must be a pair [from, to]")
    lo, hi = value
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValidationError(name, f"bounds must be finite numbers, got {value!r}")
    # A reversed range is allowed and matches nothing (as SQL's BETWEEN 5 AND 3): an API schema
    # cannot say "from <= to", so refusing it would reject requests the contract calls valid.
    return (float(lo), float(hi))


def _names(name: str, value: Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ValidationError(name, "must be a list of strings, not a string")
    out = tuple(value)
    if not all(isinstance(v, str) for v in out):
        raise ValidationError(name, "must be a list of strings")
    return out


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Restrictions applied before fusion. Every field is optional.

    ``genres`` and ``platforms`` keep titles having any of the listed values;
    ``blocked_genres`` drops titles having any of them. Ranges are inclusive. A
    title whose year or rating is unknown fails a range filter on that field, and
    an unrated title fails ``content_rating_limit``: for a parental limit, unknown
    must mean "not allowed".
    """

    genres: tuple[str, ...] = ()
    blocked_genres: tuple[str, ...] = ()
    year_range: tuple[float, float] | None = None
    rating_range: tuple[float, float] | None = None
    content_rating_limit: str | None = None
    platforms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "genres", _names("genres", self.genres))
        object.__setattr__(self, "blocked_genres", _names("blocked_genres", self.blocked_genres))
        object.__setattr__(self, "platforms", _names("platforms", self.platforms))
        object.__setattr__(self, "year_range", _range("year_range", self.year_range))
        object.__setattr__(self, "rating_range", _range("rating_range", self.rating_range))
        limit = self.content_rating_limit
        if limit is not None and limit not in CONTENT_RATINGS:
            raise ValidationError(
                "content_rating_limit", f"unknown rating {limit!r}; known: {', '.join(CONTENT_RATINGS)}"
            )


def _meta_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(s for s in value.split("|") if s)
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(str(v) for v in value)
    return (str(value),)


def _meta_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


@dataclass(frozen=True, slots=True)
class CatalogArrays:
    """Per-title columns that filters and facets read, aligned with catalog positions.

    ``rating`` comes from ``metadata["rating"]`` (NaN when absent), ``content_rating``
    from ``metadata["content_rating"]`` and ``platforms`` from ``metadata["platforms"]``.
    """

    genres: tuple[str, ...]
    genre_onehot: npt.NDArray[np.bool_]  # (n_items, n_genres)
    years: npt.NDArray[np.float32]  # NaN = unknown
    rating: npt.NDArray[np.float32]  # NaN = unknown
    content_rating: npt.NDArray[np.int8]  # ordinal; _UNRATED when unknown
    platforms: tuple[str, ...]
    platform_onehot: npt.NDArray[np.bool_]  # (n_items, n_platforms)

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> CatalogArrays:
        items = catalog.items
        onehot = catalog.genre_matrix().toarray().astype(bool)
        meta_platforms = [_meta_tuple(it.metadata.get("platforms")) for it in items]
        platforms = tuple(sorted({p for ps in meta_platforms for p in ps}))
        pidx = {p: j for j, p in enumerate(platforms)}
        rows = np.fromiter((i for i, ps in enumerate(meta_platforms) for _ in ps), dtype=np.int64)
        cols = np.fromiter((pidx[p] for ps in meta_platforms for p in ps), dtype=np.int64)
        ponehot = np.zeros((len(items), len(platforms)), dtype=bool)
        ponehot[rows, cols] = True
        return cls(
            genres=catalog.genres,
            genre_onehot=onehot,
            years=catalog.years(),
            rating=np.array([_meta_float(it.metadata.get("rating")) for it in items], dtype=np.float32),
            content_rating=np.array(
                [CONTENT_RATINGS.get(str(it.metadata.get("content_rating")), _UNRATED) for it in items],
                dtype=np.int8,
            ),
            platforms=platforms,
            platform_onehot=ponehot,
        )


def _any_of(
    onehot: npt.NDArray[np.bool_], vocab: tuple[str, ...], wanted: tuple[str, ...]
) -> npt.NDArray[np.bool_]:
    cols = [vocab.index(v) for v in dict.fromkeys(wanted) if v in vocab]
    if not cols:
        return np.zeros(onehot.shape[0], dtype=bool)
    return onehot[:, cols].any(axis=1)


def filter_mask(arrays: CatalogArrays, filters: SearchFilters | None) -> npt.NDArray[np.bool_]:
    """Boolean mask of titles that pass ``filters`` (all True when there are none).

    Unknown genre or platform names match nothing: asking for a genre the catalog
    lacks gives no results rather than an error, and blocking one blocks nothing.
    """
    n = arrays.genre_onehot.shape[0]
    mask = np.ones(n, dtype=bool)
    if filters is None:
        return mask
    if filters.genres:
        mask &= _any_of(arrays.genre_onehot, arrays.genres, filters.genres)
    if filters.blocked_genres:
        mask &= ~_any_of(arrays.genre_onehot, arrays.genres, filters.blocked_genres)
    if filters.platforms:
        mask &= _any_of(arrays.platform_onehot, arrays.platforms, filters.platforms)
    if filters.year_range is not None:
        lo, hi = filters.year_range
        mask &= (arrays.years >= lo) & (arrays.years <= hi)  # NaN compares False
    if filters.rating_range is not None:
        lo, hi = filters.rating_range
        mask &= (arrays.rating >= lo) & (arrays.rating <= hi)
    if filters.content_rating_limit is not None:
        mask &= arrays.content_rating <= CONTENT_RATINGS[filters.content_rating_limit]
    return mask
