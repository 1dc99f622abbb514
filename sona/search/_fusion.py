"""Rank selection and weighted Reciprocal Rank Fusion, as plain array functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["minmax", "top_k", "weighted_rrf"]


def top_k(scores: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.int64]:
    """Positions of the ``k`` best valid scores, best first; ties go to the lower position.

    ``argpartition`` keeps this O(n) in the catalog size; only the ``k`` winners are sorted.
    """
    idx = np.flatnonzero(valid)
    if idx.size > k:
        idx = idx[np.argpartition(-scores[idx], k - 1)[:k]]
    order = np.lexsort((idx, -scores[idx]))
    return idx[order].astype(np.int64, copy=False)


def weighted_rrf(
    rankings: Sequence[npt.NDArray[np.int64]], weights: Sequence[float], k: float = 60.0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Fuse best-first rankings: each adds ``weight / (k + rank)`` (rank from 1) to its items.

    Returns
    -------
    (items, scores)
        The sorted union of all rankings and each item's fused score. Items absent
        from a ranking get nothing from it.
    """
    items = np.unique(
        np.concatenate([np.asarray(r, dtype=np.int64) for r in rankings] or [np.empty(0, np.int64)])
    )
    fused = np.zeros(items.size, dtype=np.float64)
    for ranking, w in zip(rankings, weights, strict=True):
        if ranking.size:
            pos = np.searchsorted(items, ranking)
            fused[pos] += w / (k + np.arange(1, ranking.size + 1, dtype=np.float64))
    return items, fused


def minmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Scale to [0, 1]; a constant vector maps to all ones (every hit equally relevant)."""
    if x.size == 0:
        return x.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12:
        return np.ones_like(x, dtype=np.float64)
    return (x - lo) / (hi - lo)
