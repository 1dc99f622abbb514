"""Nearest titles to a query vector: exact (NumPy) or approximate (hnswlib HNSW).

Exact search reads the whole ``(n, dim)`` matrix per query, about 150 MB at 100k
MiniLM titles: memory-bound, 5-15 ms on a busy small machine. Above
``SearchConfig.ann_min_items`` the index also builds an HNSW graph (hnswlib, an
optional dependency imported lazily), which visits a few thousand vectors instead.

Filters still apply before the cut: a filtered query asks HNSW for enough
neighbours to expect ``k`` survivors and falls back to an exact scan of the
passing titles whenever the graph may have missed some; a selective filter
(few passing titles) scans them exactly from the start, which is then cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sona.errors import ConfigError
from sona.search._config import SearchConfig
from sona.search._fusion import top_k

__all__ = ["VectorSearch", "hnswlib_available"]

#: A filter passing at most this share of the catalog is scanned exactly, not via HNSW.
_EXACT_SHARE = 0.25


def hnswlib_available() -> bool:
    """Whether the optional ``hnswlib`` package can be imported."""
    try:
        import hnswlib  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class VectorSearch:
    """L2-normalized title vectors plus, for large catalogs, an HNSW graph over them."""

    vectors: npt.NDArray[np.float32]  # (n_items, dim), rows L2-normalized
    hnsw: Any | None  # hnswlib.Index (inner product space) or None for exact search

    @classmethod
    def build(cls, vectors: npt.NDArray[np.float32], config: SearchConfig) -> VectorSearch:
        n, dim = vectors.shape
        use_ann = config.ann == "hnsw" or (
            config.ann == "auto" and n >= config.ann_min_items and hnswlib_available()
        )
        if not use_ann or n == 0:
            return cls(vectors=vectors, hnsw=None)
        try:
            import hnswlib
        except ImportError as exc:
            raise ConfigError(
                "SearchConfig.ann='hnsw' needs the hnswlib package: pip install hnswlib"
            ) from exc
        graph = hnswlib.Index(space="ip", dim=dim)
        graph.init_index(
            max_elements=n, ef_construction=config.hnsw_ef_construction, M=config.hnsw_m, random_seed=0
        )
        graph.add_items(vectors, np.arange(n), num_threads=-1)
        graph.set_ef(config.hnsw_ef_search)  # hnswlib searches with max(ef, k)
        graph.set_num_threads(1)  # one query per request thread; no pool spin-up per query
        return cls(vectors=vectors, hnsw=graph)

    @property
    def approximate(self) -> bool:
        return self.hnsw is not None

    def similarity(
        self, query: npt.NDArray[np.float32], items: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """Cosine of ``query`` with the given titles only."""
        return self.vectors[items] @ query

    def top(
        self,
        query: npt.NDArray[np.float32],
        mask: npt.NDArray[np.bool_],
        n_valid: int,
        k: int,
        min_similarity: float,
    ) -> npt.NDArray[np.int64]:
        """Positions of up to ``k`` passing titles with cosine ≥ ``min_similarity``, best first."""
        n = self.vectors.shape[0]
        if n_valid == 0 or k < 1:
            return np.empty(0, dtype=np.int64)
        if self.hnsw is None:
            sims = self.vectors @ query
            return top_k(sims, mask & (sims >= min_similarity), k)
        if n_valid < n and n_valid <= _EXACT_SHARE * n:
            return self._exact_subset(query, mask, k, min_similarity)
        want = k if n_valid == n else math.ceil(2 * k * n / n_valid)  # expect ~2k survivors
        want = min(n, want)
        try:
            labels, dist = self.hnsw.knn_query(query[None, :], k=want, num_threads=1)
        except RuntimeError:  # hnswlib found fewer than `want` neighbours (tiny or degenerate graph)
            return self._exact_subset(query, mask, k, min_similarity)
        labels = labels[0].astype(np.int64)
        sims = 1.0 - dist[0]
        keep = mask[labels] & (sims >= min_similarity)
        found = labels[keep][:k]
        graph_exhausted = want >= n or sims[-1] < min_similarity  # nothing further can qualify
        if found.size >= k or n_valid == n or graph_exhausted:
            return found
        return self._exact_subset(query, mask, k, min_similarity)

    def _exact_subset(
        self, query: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], k: int, min_similarity: float
    ) -> npt.NDArray[np.int64]:
        idx = np.flatnonzero(mask)
        sims = self.vectors[idx] @ query
        return idx[top_k(sims, sims >= min_similarity, k)]
