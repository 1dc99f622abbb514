"""recommend_batch over many users ranks by the documented fused score (the batch-only kernels included).

A batch of 64+ users reads a dense item-item matrix through its column tiles, and
a sparse one a few users at a time through a bounded gather buffer; one user's
request does neither. Both must give the plain definition's ranking and scores.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

import sona
from sona.datasets import SyntheticConfig, generate_synthetic


def _z(s: np.ndarray) -> np.ndarray:
    return (s - s.mean(axis=1, keepdims=True)) / np.maximum(s.std(axis=1, keepdims=True), 1e-6)


def _reference_fused(engine: sona.Sona, users: list[str]) -> np.ndarray:
    """(users, titles) fused score from the sources' plain definitions, in float64."""
    cfg = engine.config
    collab = engine.interactions(users) @ engine.collab_
    collab = collab.toarray() if sp.issparse(collab) else np.asarray(collab)
    profiles = engine.profiles(users)
    pref = np.stack([p.preference_vector for p in profiles]).astype(np.float64)
    genre = np.array([[p.genre_affinities[g] for g in engine.catalog.genres] for p in profiles])
    with torch.no_grad():
        tower = engine.scorer_(engine.tower_inputs(users)).double().numpy()
    return (
        cfg.w_collaborative * _z(collab.astype(np.float64))
        + cfg.w_tower * _z(tower)
        + cfg.w_content * _z(pref @ engine.content_unit_.T.astype(np.float64))
        + cfg.w_genre * _z(np.asarray(engine.genre_mean_matrix_ @ genre.T).T)
        + cfg.w_popularity * engine.popularity_[None, :]
        + cfg.w_trending * engine.trending_[None, :]
    )


def _assert_batch_ranks_by_reference(engine: sona.Sona, users: list[str], k: int = 10) -> None:
    cfg = engine.config
    assert not (cfg.w_graph or cfg.w_sequential), "the reference covers the default sources"
    fused = _reference_fused(engine, users)
    watched = engine.user_events(users).groupby("user_id")["content_id"].agg(set)
    for i, u in enumerate(users):
        fused[i, engine.catalog.index_of(np.array(sorted(watched[u]), dtype=object))] = -np.inf
    got = engine.recommend_batch(users, k=k, explore=False)
    assert got["user_id"].tolist() == [u for u in users for _ in range(k)]
    top = engine.catalog.index_of(got["content_id"].to_numpy(dtype=object)).reshape(len(users), k)
    chosen = np.take_along_axis(fused, top, axis=1)
    best = -np.sort(-fused, axis=1)[:, :k]
    # the batch's titles are the reference's top k, in order (up to float32 near-ties)
    np.testing.assert_allclose(chosen, best, atol=2e-4)
    assert engine.calibration_ is not None
    expected = engine.calibration_(chosen.astype(np.float32))
    np.testing.assert_allclose(got["score"].to_numpy().reshape(len(users), k), expected, atol=1e-5)


def _warm(engine: sona.Sona, n: int) -> list[str]:
    """The first ``n`` users with engagement (the others get the cold-start list)."""
    users = [str(u) for u in engine.users_]
    rows = engine.interactions(users)
    return [u for u, nnz in zip(users, np.diff(rows.indptr), strict=True) if nnz][:n]


def test_a_batch_through_dense_ease_tiles_ranks_by_the_fused_score(engine: sona.Sona) -> None:
    assert engine.collab_kind_ == "ease"  # 1,682 titles: several column tiles, read by a batch of 300
    _assert_batch_ranks_by_reference(engine, _warm(engine, 300))


def test_a_batch_through_the_sparse_ease_gather_ranks_by_the_fused_score() -> None:
    catalog, events = generate_synthetic(
        SyntheticConfig(n_items=1500, n_users=500, events_per_user=60, seed=5)
    )
    cfg = sona.SonaConfig(
        epochs=1, batch_size=256, dim=16, hidden_dim=32, progress=False, seed=7, collaborative="sparse_ease"
    )
    engine = sona.Sona(catalog, config=cfg).fit(events)
    assert sp.issparse(engine.collab_)
    users = _warm(engine, 500)
    # entries of B the batch gathers: several passes of the 2**18-entry buffer
    assert np.diff(engine.collab_.indptr)[engine.interactions(users).indices].sum() > 4 * 2**18
    _assert_batch_ranks_by_reference(engine, users)
