"""Item-item collaborative weights: EASE (dense or sparse) and cosine ItemKNN (numpy / scipy).

All return an (n_items, n_items) matrix ``B`` such that a user's scores are
``x_u @ B`` for the user's interaction row ``x_u``; that makes them usable both
as baselines and as the engine's collaborative candidate source, and lets new
users fold in without refitting.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from sona.errors import FitError

__all__ = ["ease_weights", "itemknn_weights", "sparse_ease_weights"]


def ease_weights(x: sp.csr_matrix, lam: float) -> npt.NDArray[np.float32]:
    """EASE (Steck 2019): ``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and ``diag(B) = 0``.

    Dense in n_items² (float32: 400 MB at 10k titles, computed in place by a
    Cholesky inverse, so the peak is about twice that); larger catalogs use
    :func:`sparse_ease_weights`.
    """
    g = np.asarray((x.T @ x).todense(), dtype=np.float32).T  # symmetric: the Fortran-order view is G
    g[np.diag_indices_from(g)] += np.float32(lam)
    c, info = lapack.spotrf(g, lower=True, overwrite_a=True, clean=False)  # in place, no copy
    if info != 0:
        raise FitError(f"EASE Gram matrix is not positive definite (lambda={lam})")
    p, info = lapack.spotri(c, lower=True, overwrite_c=True)
    del g, c
    if info != 0:
        raise FitError(f"EASE Gram matrix is singular (lambda={lam})")
    n = p.shape[0]
    for lo in range(0, n, 1024):  # spotri fills the lower triangle only: mirror it in place
        hi = min(lo + 1024, n)
        p[lo:hi, hi:] = p[hi:, lo:hi].T
        p[lo:hi, lo:hi] = np.tril(p[lo:hi, lo:hi]) + np.tril(p[lo:hi, lo:hi], -1).T
    d = np.diag(p).copy()
    # P is symmetric now, so its transpose is the same matrix in C order: B is built in C order,
    # which ``x @ B`` (scipy's sparse x dense product) reads in place instead of copying all of B.
    b = np.ascontiguousarray(p.T)  # a view: LAPACK's p is Fortran-ordered
    b /= -d[None, :]
    b[np.diag_indices_from(b)] = 0.0
    if not np.isfinite(b).all():
        raise FitError("EASE produced non-finite weights")
    return b


#: Titles with the longest Gram rows, whose pairwise Gram entries sparse EASE keeps dense (64 MB).
_HUBS = 4096


def sparse_ease_weights(
    x: sp.csr_matrix,
    lam: float,
    neighbors: int = 128,
    *,
    per_viewer: int = 4,
    min_neighbors: int = 16,
    chunk: int = 256,
    union_max: int = 2048,
) -> sp.csr_matrix:
    """EASE with each title's weights restricted to its strongest regressors.

    Column j of EASE's ``B`` is the ridge regression of title j's column of
    ``X`` on all other titles' columns (Steck 2019). Restricting the regressors
    to the titles with the largest one-variable ridge coefficient
    ``G_ij / (G_ii + λ)`` (``G = XᵀX``; they carry nearly all of the weight)
    turns one n×n inverse into n small solves, so 100k titles fit where dense
    EASE needs 40 GB. Title j keeps ``per_viewer`` regressors per user who
    watched it, at least ``min_neighbors`` and at most ``neighbors`` (k): a title
    seen by 3 users has 3 columns of evidence, and 128 regressors for it cost
    as much as for a hit while changing no ranking (benchmarks/item_item.py:
    NDCG@10 equal to the 4th decimal). So the work is O(Σ_j k_j²) ≤
    O(n·min_neighbors² + per_viewer·k·nnz(X)): it follows the events, not the
    catalog, where the uncapped n·k² grew with every title added. Memory:
    O(nnz(G) + n k) plus a fixed 64 MB. Same layout as :func:`itemknn_weights`:
    column j holds j's weights.

    Notes
    -----
    The cost is gathering each title's block of ``G``, not solving it. The
    titles with the longest rows of ``G`` (the popular ones, in almost every
    neighbourhood) have their pairwise entries in one dense table built once;
    every other entry comes from the short rows of the rest, scanned per group
    of titles whose neighbourhoods share at most ``union_max`` titles. A
    title's system is solved at the smallest of a few widths that holds its
    regressors (padding costs width² gathers). The systems are symmetric
    positive definite (λ > 0): Cholesky (LAPACK ``sposv``).
    """
    g = (x.T @ x).tocsr().astype(np.float32)  # counts: exact in float32 up to 16M co-views
    g.sort_indices()
    n = g.shape[0]
    k = min(neighbors, max(n - 1, 1))
    viewers = g.diagonal()  # for a binary x, G_jj is the number of users who watched title j
    shrunk = (1.0 / (viewers + lam)).astype(np.float32)
    gram = _GramBlocks(g, _HUBS, union_max)
    ladder = _widths(k)
    rows, cols, vals = [], [], []
    with threadpool_limits(1, user_api="blas"):  # small solves: threads only contend
        for lo in range(0, n, chunk):  # loop over title chunks, not users or events
            hi = min(lo + chunk, n)
            cap = np.clip((per_viewer * viewers[lo:hi]).astype(np.int64), min_neighbors, k)
            nb, rhs = _top_regressors(g[lo:hi], lo, shrunk, cap)
            size = (nb >= 0).sum(axis=1)
            width = np.minimum(ladder[np.searchsorted(ladder, size)], nb.shape[1])
            for wd in np.unique(width[size > 0]):  # at most len(ladder) widths
                sel = np.flatnonzero((width == wd) & (size > 0))
                nbw, rhsw = nb[sel, :wd], rhs[sel, :wd]
                w = _solve_spd(gram.blocks(nbw), rhsw, lam)
                keep = rhsw > 0  # padding, and titles never co-viewed with j, carry no evidence
                rows.append(nbw[keep])
                cols.append(np.repeat(lo + sel, wd)[keep.ravel()])
                vals.append(w[keep])
    v = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    if not np.isfinite(v).all():
        raise FitError("sparse EASE produced non-finite weights")
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csr_matrix((v.astype(np.float32), (r, c)), shape=(n, n))


def _widths(k: int) -> npt.NDArray[np.int64]:
    """System widths: 8, 16, 24, then multiples of 16, capped at ``k`` (padding costs width² gathers)."""
    return np.unique(np.minimum(k, np.r_[8, 16, 24, np.arange(32, k + 16, 16)])).astype(np.int64)


def _top_regressors(
    rows: sp.csr_matrix, lo: int, shrunk: npt.NDArray[np.float32], cap: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Row i's ``cap[i]`` co-viewed titles with the largest ``G_ij / (G_ii + λ)``, padded with -1 / 0.

    Works on the rows' nonzeros only: a long-tail title co-viewed with 20
    others sorts 20 entries, not the whole catalog.
    """
    m = rows.shape[0]
    r = np.repeat(np.arange(m), np.diff(rows.indptr))
    c, v = rows.indices.astype(np.int64), rows.data
    off = c != lo + r  # never a title's own regressor
    r, c, v = r[off], c[off], v[off]
    # one stable sort by (row, score descending): float32 bits made order-preserving as integers
    bits = (v * shrunk[c]).astype(np.float32).view(np.int32)
    bits = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)
    order = np.argsort((r.astype(np.int64) << 32) | (0x7FFFFFFF - bits), kind="stable")
    r, c, v = r[order], c[order], v[order]
    rank = np.arange(len(r)) - np.searchsorted(r, np.arange(m))[r]
    top = rank < cap[r]
    k = int(cap.max(initial=1))
    nb = np.full((m, k), -1, dtype=np.int64)
    rhs = np.zeros((m, k), dtype=np.float32)
    nb[r[top], rank[top]] = c[top]
    rhs[r[top], rank[top]] = v[top]
    return nb, rhs


class _GramBlocks:
    """``G[N, N]`` for many neighbourhoods ``N`` at once, without a dense block per group of titles.

    Entries between two *hubs* (the ``hubs`` titles with the longest rows) are
    read from a dense (hubs+1)² table built once, whose last row and column are
    zero; every entry that involves another title is scattered from that
    title's (short) row into a reused, all-zero scratch table indexed by the
    group's union, and wiped after the gather. A pad (-1) reads zeros from both.
    """

    def __init__(self, g: sp.csr_matrix, hubs: int, union_max: int) -> None:
        n = g.shape[0]
        h = min(hubs, n)
        hub = np.sort(np.argsort(-np.diff(g.indptr), kind="stable")[:h])
        self.g, self.h, self.union_max = g, h, union_max
        self.hub_of = np.full(n, h, dtype=np.int64)  # a title's row in the hub table; h: not a hub
        self.hub_of[hub] = np.arange(h)
        self.hub_table = np.zeros((h + 1, h + 1), dtype=np.float32)
        self.hub_table[:h, :h] = g[hub][:, hub].toarray()
        self.scratch = np.zeros((union_max + 1) ** 2, dtype=np.float32)
        self.mark = np.zeros(n, dtype=bool)

    def blocks(self, nb: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """(m, w, w): ``G[nb[r], nb[r]]`` per row ``r`` of ``nb`` (m, w), pads as zero rows/columns."""
        out = np.empty((nb.shape[0], nb.shape[1], nb.shape[1]), dtype=np.float32)
        for part in self._parts(nb):
            self._fill(nb[part], out[part])
        return out

    def _parts(self, nb: npt.NDArray[np.int64]) -> list[slice]:
        """Runs of rows whose neighbourhoods together name at most ``union_max`` titles."""
        parts, start, count, mark = [], 0, 0, self.mark
        for r in range(len(nb)):  # loop over one chunk's titles (<= chunk), not users or events
            row = nb[r][nb[r] >= 0]
            new = int(np.count_nonzero(~mark[row]))
            if r > start and count + new > self.union_max:
                parts.append(slice(start, r))
                mark[nb[start:r]] = False  # pads index the last title, which is cleared anyway
                start, count, new = r, 0, len(row)
            mark[row] = True
            count += new
        mark[nb[start:]] = False
        parts.append(slice(start, len(nb)))
        return parts

    def _fill(self, nb: npt.NDArray[np.int64], out: npt.NDArray[np.float32]) -> None:
        pad = nb < 0
        union, pos = np.unique(np.where(pad, nb.max(initial=0), nb), return_inverse=True)
        pos = pos.reshape(nb.shape).astype(np.int32)
        u, h = len(union), self.h
        pos[pad] = u  # the scratch table's zero row and column
        hub_pos = np.where(pad, h, self.hub_of[nb]).astype(np.int32)
        is_hub = self.hub_of[union] < h
        other = np.flatnonzero(~is_hub)
        # The non-hubs' rows within the union; an entry with a hub also goes to its mirror (G is symmetric).
        blk = self.g[union[other]][:, union]
        r = np.repeat(other, np.diff(blk.indptr))
        c = blk.indices
        mirror = is_hub[c]
        stride = u + 1
        at = np.concatenate([r * stride + c, c[mirror] * stride + r[mirror]])
        self.scratch[at] = np.concatenate([blk.data, blk.data[mirror]])
        np.take(self.scratch, pos[:, :, None] * np.int32(stride) + pos[:, None, :], out=out)
        hub_flat = hub_pos[:, :, None] * np.int32(h + 1) + hub_pos[:, None, :]
        out += np.take(self.hub_table.ravel(), hub_flat)
        self.scratch[at] = 0.0


def _solve_spd(
    a: npt.NDArray[np.float32], rhs: npt.NDArray[np.float32], lam: float
) -> npt.NDArray[np.float32]:
    """``(A_r + λI)⁻¹ rhs_r`` for each system ``r`` (pads: decoupled, weight 0), by Cholesky.

    One LAPACK call per system: the k×k systems are small, and numpy's batched
    ``solve`` (LU) was three times slower here.
    """
    k = a.shape[1]
    a[:, np.arange(k), np.arange(k)] += np.float32(lam)
    out = np.empty(rhs.shape, dtype=np.float32)
    for i in range(len(a)):  # loop over one chunk's titles, not users or events
        # a[i] is symmetric: its transpose is the same matrix in the Fortran order LAPACK reads in place
        _, w, info = lapack.sposv(a[i].T, rhs[i], lower=True, overwrite_a=True)
        if info != 0:
            raise FitError(f"sparse EASE: a neighbourhood system is not positive definite (lambda={lam})")
        out[i] = w
    return out


def itemknn_weights(
    x: sp.csr_matrix, neighbors: int = 100, shrink: float = 10.0, chunk: int = 2048
) -> sp.csr_matrix:
    """Cosine item-item similarity keeping the ``neighbors`` most similar items per target title.

    Column ``j`` of the result holds the neighbours of target ``j``, so
    ``x_u @ B`` sums the similarities between the user's titles and ``j``.
    Computed in row chunks so a 10k-title catalog never needs a dense n² array.
    """
    xb = x.tocsc().astype(np.float32)
    norms = np.sqrt(np.asarray(xb.multiply(xb).sum(axis=0)).ravel())
    xt = xb.T.tocsr()
    n = x.shape[1]
    k = min(neighbors, max(n - 1, 1))
    rows, cols, vals = [], [], []
    for lo in range(0, n, chunk):  # loop over item chunks, not users or events
        hi = min(lo + chunk, n)
        s = np.asarray((xt[lo:hi] @ xb).todense(), dtype=np.float32)
        s /= norms[lo:hi, None] * norms[None, :] + shrink
        s[np.arange(hi - lo), np.arange(lo, hi)] = 0.0
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        v = np.take_along_axis(s, top, axis=1)
        keep = v > 0
        rows.append(np.repeat(np.arange(lo, hi), k)[keep.ravel()])
        cols.append(top.ravel()[keep.ravel()])
        vals.append(v.ravel()[keep.ravel()])
    # Row i keeps i's top neighbours; transposing makes column j hold j's neighbours.
    s = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return s.T.tocsr().astype(np.float32)
