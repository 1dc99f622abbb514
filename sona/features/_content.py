"""Title-side features from the catalog: content feature matrix, people graph, popularity, cold start."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from sona.catalog import Catalog

__all__ = ["cold_start_order", "content_features", "people_similarity", "popularity_scores"]


def _row_normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ m


def content_features(catalog: Catalog, *, people_min_count: int = 2, tag_min_count: int = 2) -> sp.csr_matrix:
    """(n_items, n_features): genres, release decade, people and tags, each block row-normalized.

    Tags (``metadata["tags"]``, e.g. MovieLens' user-applied keywords) are a
    block of their own so a catalog without them keeps exactly its old features.
    """
    blocks = [_row_normalize(catalog.genre_matrix())]
    years = catalog.years()
    known = np.isfinite(years)
    if known.any():
        decade = np.where(known, (np.nan_to_num(years) // 10).astype(np.int64), 0)
        uniq = np.unique(decade[known])
        col = np.searchsorted(uniq, decade)
        rows = np.flatnonzero(known)
        blocks.append(
            sp.csr_matrix(
                (np.ones(len(rows), np.float32), (rows, col[known])), shape=(len(catalog), len(uniq))
            )
        )
    people, _ = catalog.people_matrix(min_count=people_min_count)
    if people.shape[1]:
        blocks.append(_row_normalize(people))
    tags, _ = catalog.tag_matrix(min_count=tag_min_count)
    if tags.shape[1]:
        blocks.append(_row_normalize(tags))
    return sp.hstack(blocks, format="csr", dtype=np.float32)


def people_similarity(catalog: Catalog, *, min_count: int = 2) -> sp.csr_matrix | None:
    """(n_items, n_items) cosine overlap of titles' people (actors, directors); None without people."""
    people, _ = catalog.people_matrix(min_count=min_count)
    if people.shape[1] == 0 or people.nnz == 0:
        return None
    pn = _row_normalize(people.astype(np.float32))
    s = (pn @ pn.T).tocsr()
    s.setdiag(0.0)
    s.eliminate_zeros()
    return s.astype(np.float32)


def popularity_scores(
    item: npt.NDArray[np.int64], weight: npt.NDArray[np.float32], n_items: int
) -> npt.NDArray[np.float32]:
    """(n_items,) z-scored log(1 + weighted view count); zeros when nothing was viewed."""
    counts = np.bincount(item, weights=weight, minlength=n_items)
    s = np.log1p(counts)
    sd = s.std()
    return ((s - s.mean()) / sd if sd > 0 else np.zeros_like(s)).astype(np.float32)


def cold_start_order(
    popularity: npt.NDArray[np.float32], genre_matrix: sp.csr_matrix
) -> npt.NDArray[np.int64]:
    """All titles ordered for a user we know nothing about: popular, but genre-diverse.

    Round-robin over genres (most popular genre first): each round takes the
    most popular not-yet-used title whose *primary* genre (its first listed
    genre, in catalog genre order) is that genre, so the first page spans many
    genres instead of ten blockbusters of one kind. Loops run over genres, not users.
    """
    n = len(popularity)
    order = np.argsort(-popularity, kind="stable")
    gm = genre_matrix.tocsr()
    has = np.diff(gm.indptr) > 0
    primary = np.full(n, -1, dtype=np.int64)
    primary[has] = gm.indices[gm.indptr[:-1][has]]
    # Rank of each title within its primary genre, by popularity.
    ranked_primary = primary[order]
    within = np.zeros(n, dtype=np.int64)
    for g in np.unique(ranked_primary):  # loop over genres
        sel = ranked_primary == g
        within[sel] = np.arange(int(sel.sum()))
    # Genre order: by its best title's popularity; titles without genres go last.
    genre_best = {int(g): int(np.flatnonzero(ranked_primary == g)[0]) for g in np.unique(ranked_primary)}
    gpos = np.array([genre_best[int(g)] for g in ranked_primary])
    round_key = within + np.where(ranked_primary < 0, n, 0)
    final = np.lexsort((gpos, round_key))
    return order[final].astype(np.int64)
