"""Preference vectors and genre affinities, for many users at once."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

__all__ = ["genre_affinities", "l2_normalize", "preference_vectors"]


def l2_normalize(x: npt.NDArray[np.float32], eps: float = 1e-12) -> npt.NDArray[np.float32]:
    """Rows scaled to unit length; all-zero rows stay zero."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32)


def preference_vectors(
    weights: sp.csr_matrix, content_embeddings: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """(n_users, dim): the weighted, L2-normalized aggregate of the titles' embeddings.

    ``weights`` is the (n_users, n_items) engagement x decay matrix. A user with
    no qualifying events gets the zero vector (the cold-start signal).
    """
    agg = np.asarray(weights @ content_embeddings, dtype=np.float32)
    return l2_normalize(agg)


def genre_affinities(
    weights: sp.csr_matrix, genre_matrix: sp.csr_matrix, *, alpha: float = 1.0
) -> npt.NDArray[np.float32]:
    """(n_users, n_genres) Laplace-smoothed share of each genre in a user's weighted viewing.

    ``(w_g + alpha) / (sum_g w_g + alpha * n_genres)``: a user with no events
    gets the uniform distribution rather than zeros, and one horror title does
    not make a user a horror fan.
    """
    mass = np.asarray((weights @ genre_matrix).todense(), dtype=np.float64)
    g = genre_matrix.shape[1]
    out = (mass + alpha) / (mass.sum(axis=1, keepdims=True) + alpha * max(g, 1))
    return out.astype(np.float32)
