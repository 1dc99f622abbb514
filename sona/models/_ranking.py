"""Ranking primitives over (batch, n_items) score arrays: standardize, mask, top-k, MMR, exploration."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch

__all__ = [
    "explore_mask",
    "explore_picks",
    "mask_rows",
    "mmr_rerank",
    "select_top",
    "standardize_rows",
    "topk_rows",
]


def standardize_rows(s: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Per-row z-score, so sources with different scales can be summed with fixed weights."""
    mu = s.mean(axis=1, keepdims=True)
    sd = s.std(axis=1, keepdims=True)
    return ((s - mu) / np.maximum(sd, 1e-6)).astype(np.float32)


def mask_rows(s: npt.NDArray[np.float32] | torch.Tensor, seen: sp.csr_matrix, value: float = -np.inf) -> None:
    """Set ``s[b, j] = value`` for every stored entry ``(b, j)`` of ``seen`` (in place; numpy or torch)."""
    rows = np.repeat(np.arange(seen.shape[0], dtype=np.int64), np.diff(seen.indptr))
    if isinstance(s, torch.Tensor) and s.is_contiguous():  # flat positions: index_fill_ is ~2x index_put_
        flat = rows * s.shape[1] + seen.indices
        s.view(-1).index_fill_(0, torch.from_numpy(flat), float(value))
    elif isinstance(s, torch.Tensor):
        s[torch.from_numpy(rows), torch.from_numpy(seen.indices.astype(np.int64))] = float(value)
    else:
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
    candidates in relevance order. Candidates with non-finite relevance (masked
    titles) are never picked before a finite one and never twice, so a row
    runs out of useful picks only when it has fewer than k finite candidates.
    """
    b, m = candidates.shape
    k = min(k, m)
    rel = relevance.astype(np.float64)
    finite = np.isfinite(rel)
    lo = np.where(finite, rel, np.inf).min(axis=1, keepdims=True)
    hi = np.where(finite, rel, -np.inf).max(axis=1, keepdims=True)
    reln = np.where(finite, (rel - lo) / np.maximum(hi - lo, 1e-12), 0.0)  # non-finite: masked below
    v = item_vectors[candidates]  # (b, m, d)
    sim = np.einsum("bmd,bnd->bmn", v, v)
    maxsim = np.zeros((b, m))
    picked = np.zeros((b, k), dtype=np.int64)
    taken = np.zeros((b, m), dtype=bool)
    ar = np.arange(b)
    for t in range(k):
        # Masked titles get -inf for every lam (0 * -inf would be NaN, which argmax prefers).
        obj = np.where(finite & ~taken, (1.0 - lam) * reln - lam * maxsim, -np.inf)
        # A row out of finite candidates takes its first untaken one (relevance -inf, so callers
        # drop it like any masked pick) rather than argmax's 0, which may be taken already.
        j = np.where(np.isneginf(obj.max(axis=1)), np.argmin(taken, axis=1), np.argmax(obj, axis=1))
        picked[:, t] = j
        taken[ar, j] = True
        maxsim = np.maximum(maxsim, sim[ar, j, :])
    return np.take_along_axis(candidates, picked, axis=1)


def _unit_hash(text: str, digest_size: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=digest_size).digest(), "big")


def explore_mask(
    user_ids: Sequence[str],
    n_events: npt.NDArray[np.int64],
    *,
    seed: int,
    epsilon: float,
    halflife: float,
) -> npt.NDArray[np.bool_]:
    """Which users get an exploration slot: deterministic per-(user, history length) coin flips.

    The chance ``epsilon * 0.5 ** (n_events / halflife)`` decays as a user's
    history grows; hashing instead of an rng keeps one request reproducible.
    """
    eps = epsilon * np.power(0.5, n_events / halflife)
    draws = np.array(
        [_unit_hash(f"{seed}|{u}|{c}", 8) / 2.0**64 for u, c in zip(user_ids, n_events, strict=True)]
    )
    return draws < eps


def explore_picks(user_ids: Sequence[str], *, seed: int, width: int) -> npt.NDArray[np.int64]:
    """Per user, a fixed position in ``[0, width)`` of the candidates below the top k to explore."""
    return np.array([_unit_hash(f"x{seed}|{u}", 4) for u in user_ids], dtype=np.int64) % width


def select_top(
    ranking: torch.Tensor,
    k: int,
    *,
    diversity: float,
    mmr_candidates: int,
    explore_pool: int,
    item_vectors: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(batch, k) top positions of ``ranking`` and the (batch, m) candidates they came from.

    With ``diversity > 0`` the top ``mmr_candidates`` are re-ranked by
    :func:`mmr_rerank`; ``explore_pool`` extra candidates are kept for an
    exploration slot (see :func:`explore_picks`).
    """
    n_items = ranking.shape[1]
    k_eff = min(k, n_items)
    m = min(n_items, max(k_eff + explore_pool, mmr_candidates if diversity > 0 else 0))
    rel_t, cand_t = torch.topk(ranking, m, dim=1)
    cand = cand_t.numpy()
    if diversity > 0:
        top = mmr_rerank(cand, rel_t.numpy(), item_vectors, k_eff, diversity)
    else:
        top = cand[:, :k_eff].copy()
    return top, cand
