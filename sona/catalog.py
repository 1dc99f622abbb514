"""The content catalog: titles, their features, and the id ↔ index mapping.

Every model in sona indexes titles by position in one :class:`Catalog`, so the
catalog owns the mapping and the dense feature matrices derived from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from sona._ids import ContentId
from sona.errors import DataError, UnknownContentError, ValidationError

__all__ = ["Catalog", "ContentItem"]


@dataclass(frozen=True, slots=True)
class ContentItem:
    """One title. ``people`` holds knowledge-graph entities (actors, directors, ...).

    ``metadata`` is free-form; keys sona reads: ``tags`` (free-text keywords, a
    content feature), ``rating``, ``content_rating`` and ``platforms`` (search filters).
    """

    content_id: ContentId
    title: str
    genres: tuple[str, ...] = ()
    release_year: int | None = None
    duration_seconds: float | None = None
    popularity: float = 0.0
    overview: str = ""
    people: tuple[str, ...] = ()
    metadata: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.content_id, int) and not isinstance(self.content_id, bool):
            object.__setattr__(self, "content_id", str(self.content_id))
        if not isinstance(self.content_id, str) or not self.content_id.strip():
            raise ValidationError("content_id", "must be a non-empty string")
        if not isinstance(self.title, str):
            raise ValidationError("title", "must be a string")
        object.__setattr__(self, "genres", tuple(str(g) for g in self.genres))
        object.__setattr__(self, "people", tuple(str(p) for p in self.people))
        y = self.release_year
        if y is not None and (isinstance(y, bool) or not isinstance(y, int) or not 1800 <= y <= 2200):
            raise ValidationError("release_year", f"must be a year or null, got {y!r}")
        d = self.duration_seconds
        if d is not None and (not isinstance(d, int | float) or not math.isfinite(d) or d <= 0):
            raise ValidationError("duration_seconds", f"must be > 0 or null, got {d!r}")
        p = self.popularity
        if not isinstance(p, int | float) or not math.isfinite(p) or p < 0:
            raise ValidationError("popularity", f"must be >= 0, got {p!r}")


class Catalog:
    """An ordered, immutable set of :class:`ContentItem` with derived features.

    Parameters
    ----------
    items
        The titles. Ids must be unique.
    """

    def __init__(self, items: Iterable[ContentItem]) -> None:
        self._items: tuple[ContentItem, ...] = tuple(items)
        if not self._items:
            raise DataError("a catalog needs at least one title")
        ids = [it.content_id for it in self._items]
        self._index: dict[str, int] = {cid: i for i, cid in enumerate(ids)}
        if len(self._index) != len(ids):
            dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
            raise ValidationError("content_id", f"duplicate id {dup!r}")
        self.ids: npt.NDArray[np.object_] = np.array(ids, dtype=object)
        self.genres: tuple[str, ...] = tuple(sorted({g for it in self._items for g in it.genres}))
        self._genre_index = {g: i for i, g in enumerate(self.genres)}

    # -- construction ---------------------------------------------------------
    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Catalog:
        """Build from a DataFrame with ``content_id`` and ``title``; other columns optional.

        ``genres`` and ``people`` may be lists or ``|``-separated strings;
        ``metadata`` (a mapping per row) is kept as given.
        """
        if "content_id" not in frame.columns:
            raise ValidationError("content_id", "column is missing")

        def seq(v: object) -> tuple[str, ...]:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ()
            if isinstance(v, str):
                return tuple(s for s in v.split("|") if s)
            return tuple(str(s) for s in v)  # type: ignore[union-attr]

        def opt(v: object) -> object:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        def meta(v: object) -> dict[str, object]:
            if opt(v) is None:
                return {}
            if not isinstance(v, Mapping):
                raise ValidationError("metadata", f"must be a mapping, got {type(v).__name__}")
            return dict(v)

        items = []
        for row in frame.to_dict("records"):
            year = opt(row.get("release_year"))
            items.append(
                ContentItem(
                    content_id=ContentId(str(row["content_id"])),
                    title=str(row.get("title", "") or ""),
                    genres=seq(row.get("genres")),
                    release_year=int(year) if year is not None else None,  # type: ignore[call-overload]
                    duration_seconds=opt(row.get("duration_seconds")),  # type: ignore[arg-type]
                    popularity=float(opt(row.get("popularity")) or 0.0),  # type: ignore[arg-type]
                    overview=str(opt(row.get("overview")) or ""),
                    people=seq(row.get("people")),
                    metadata=meta(row.get("metadata")),
                )
            )
        return cls(items)

    def to_frame(self) -> pd.DataFrame:
        """One row per title with every field (``metadata`` as a dict); :meth:`from_frame` reverses it."""
        return pd.DataFrame(
            {
                "content_id": [it.content_id for it in self._items],
                "title": [it.title for it in self._items],
                "genres": [list(it.genres) for it in self._items],
                "release_year": [it.release_year for it in self._items],
                "duration_seconds": [it.duration_seconds for it in self._items],
                "popularity": [it.popularity for it in self._items],
                "overview": [it.overview for it in self._items],
                "people": [list(it.people) for it in self._items],
                "metadata": [dict(it.metadata) for it in self._items],
            }
        )

    # -- lookup ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._items)

    def __contains__(self, content_id: object) -> bool:
        return content_id in self._index

    def __getitem__(self, content_id: str) -> ContentItem:
        return self._items[self.index_of([content_id])[0]]

    @property
    def items(self) -> tuple[ContentItem, ...]:
        return self._items

    def item_at(self, index: int) -> ContentItem:
        return self._items[index]

    def index_of(self, content_ids: Sequence[str] | npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
        """Positions of ``content_ids``; raises :class:`UnknownContentError` naming the unknown ones."""
        idx = np.fromiter(
            (self._index.get(str(c), -1) for c in content_ids), dtype=np.int64, count=len(content_ids)
        )
        if (idx < 0).any():
            raise UnknownContentError([str(c) for c, i in zip(content_ids, idx, strict=True) if i < 0])
        return idx

    def lookup(self, content_ids: pd.Series | Sequence[str]) -> npt.NDArray[np.int64]:
        """Positions of ``content_ids``, with -1 for unknown ids (no error)."""
        return pd.Series(content_ids, dtype=object).map(self._index).fillna(-1).to_numpy(np.int64)

    # -- features -------------------------------------------------------------
    def genre_matrix(self) -> sp.csr_matrix:
        """(n_items, n_genres) 0/1 matrix."""
        rows, cols = [], []
        for i, it in enumerate(self._items):
            for g in it.genres:
                rows.append(i)
                cols.append(self._genre_index[g])
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(self), len(self.genres)))

    def genre_index(self, genre: str) -> int:
        if genre not in self._genre_index:
            raise ValidationError("genre", f"unknown genre {genre!r}")
        return self._genre_index[genre]

    def people_matrix(self, min_count: int = 2) -> tuple[sp.csr_matrix, tuple[str, ...]]:
        """(n_items, n_people) 0/1 matrix over people linked to at least ``min_count`` titles."""
        return _incidence([it.people for it in self._items], min_count)

    def tag_matrix(self, min_count: int = 2) -> tuple[sp.csr_matrix, tuple[str, ...]]:
        """(n_items, n_tags) 0/1 matrix over ``metadata["tags"]`` shared by at least ``min_count`` titles."""
        return _incidence([_tags(it) for it in self._items], min_count)

    def years(self) -> npt.NDArray[np.float32]:
        """Release years with NaN where unknown."""
        return np.array(
            [np.nan if it.release_year is None else it.release_year for it in self._items],
            dtype=np.float32,
        )

    def __repr__(self) -> str:
        return f"Catalog(n_items={len(self)}, n_genres={len(self.genres)})"


def _tags(item: ContentItem) -> tuple[str, ...]:
    tags = item.metadata.get("tags")
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise ValidationError("metadata.tags", f"must be a list of strings, got {type(tags).__name__}")
    return tuple(str(t) for t in tags)


def _incidence(labels: Sequence[tuple[str, ...]], min_count: int) -> tuple[sp.csr_matrix, tuple[str, ...]]:
    """(n_items, n_labels) 0/1 matrix of labels on >= ``min_count`` titles (rarer ones say nothing)."""
    counts = pd.Series([lab for row in labels for lab in set(row)], dtype=object).value_counts()
    keep = tuple(sorted(counts[counts >= min_count].index))
    index = {lab: j for j, lab in enumerate(keep)}
    pairs = {(i, index[lab]) for i, row in enumerate(labels) for lab in row if lab in index}
    rows, cols = (list(x) for x in zip(*sorted(pairs), strict=True)) if pairs else ([], [])
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(labels), len(keep))), keep
