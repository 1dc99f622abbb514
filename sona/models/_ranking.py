"""Ranking primitives over (batch, n_items) score arrays: standardize, top-k, MMR."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

__all__ = ["mask_rows", "mmr_rerank", "standardize_rows", "topk_rows"]


def standardize_rows(s: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Per-row z-score, so sources with different scales can be summed with fixed weights."""
    mu = s.mean(axis=1, keepdims=True)
    sd = s.std(axis=1, keepdims=True)
    return ((s - mu) / np.maximum(sd, 1e-6)).astype(np.float32)


def mask_rows(s: npt.NDArray[np.float32], seen: sp.csr_matrix, value: float = -np.inf) -> None:
    """Set ``s[b, j] = value`` for every stored entry ``(b, j)`` of ``seen`` (in place)."""
    rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
    s[rows, seen.indices] = value


def topk_rows(s: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """(batch, k) column indices of each row's k largest values, best first (ties by index)."""
    n = s.shape[1]
    k = min(k, n)
    if k < n:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), s.shape).copy()
    v = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-v, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def mmr_rerank(
    candidates: npt.NDArray[np.int64],
    relevance: npt.NDArray[np.float32],
    item_vectors: npt.NDArray[np.float32],
    k: int,
    lam: float,
) -> npt.NDArray[np.int64]:
    """Maximal marginal relevance over each row's candidates, vectorized over the batch.

    Picks greedily ``argmax (1 - lam) * rel - lam * max_sim(picked)``, with
    relevance min-max scaled per row to [0, 1] so ``lam`` means the same for
    every user and ``item_vectors`` L2-normalized (cosine similarity). The loop
    runs over the k positions, never over users. ``lam = 0`` returns the
    candidates in relevance order.
    """
    b, m = candidates.shape
    k = min(k, m)
    rel = relevance.astype(np.float64)
    finite = np.isfinite(rel)
    lo = np.where(finite, rel, np.inf).min(axis=1, keepdims=True)
    hi = np.where(finite, rel, -np.inf).max(axis=1, keepdims=True)
    reln = np.where(finite, (rel - lo) / np.maximum(hi - lo, 1e-12), -np.inf)
    v = item_vectors[candidates]  # (b, m, d)
    sim = np.einsum("bmd,bnd->bmn", v, v)
    maxsim = np.zeros((b, m))
    picked = np.zeros((b, k), dtype=np.int64)
    taken = np.zeros((b, m), dtype=bool)
    ar = np.arange(b)
    for t in range(k):
        obj = (1.0 - lam) * reln - lam * maxsim
        obj[taken] = -np.inf
        j = np.argmax(obj, axis=1)
        picked[:, t] = j
        taken[ar, j] = True
        maxsim = np.maximum(maxsim, sim[ar, j, :])
    return np.take_along_axis(candidates, picked, axis=1)
