"""Item-item collaborative weights: EASE and cosine ItemKNN (numpy / scipy).

Both return an (n_items, n_items) matrix ``B`` such that a user's scores are
``x_u @ B`` for the user's interaction row ``x_u``; that makes them usable both
as baselines and as the engine's collaborative candidate source, and lets new
users fold in without refitting.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from sona.errors import FitError

__all__ = ["ease_weights", "itemknn_weights"]


def ease_weights(x: sp.csr_matrix, lam: float) -> npt.NDArray[np.float32]:
    """EASE (Steck 2019): ``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and ``diag(B) = 0``.

    Dense in n_items², so meant for catalogs up to a few thousand titles.
    """
    g = np.asarray((x.T @ x).todense(), dtype=np.float64)
    g[np.diag_indices_from(g)] += lam
    try:
        p = np.linalg.inv(g)
    except np.linalg.LinAlgError as exc:
        raise FitError(f"EASE Gram matrix is singular (lambda={lam})") from exc
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    if not np.isfinite(b).all():
        raise FitError("EASE produced non-finite weights")
    return b.astype(np.float32)


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
