"""The fast scoring path and incremental observe give the same answers as the plain definitions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

import sona


def _z(s: np.ndarray) -> np.ndarray:
    """Reference per-user z-score over all titles (population sd, floored at 1e-6)."""
    return (s - s.mean(axis=1, keepdims=True)) / np.maximum(s.std(axis=1, keepdims=True), 1e-6)


def test_fused_score_equals_sum_of_dense_standardized_sources(engine: sona.Sona) -> None:
    users = ["1", "77", "500"]
    cfg = engine.config
    w = engine.interactions(users)
    st_pref = np.stack([engine.profile(u).preference_vector for u in users]).astype(np.float64)
    genre = np.stack([[engine.profile(u).genre_affinities[g] for g in engine.catalog.genres] for u in users])
    collab = w @ engine.collab_
    collab = collab.toarray() if sp.issparse(collab) else np.asarray(collab)
    with torch.no_grad():
        tower = engine.scorer_(engine.tower_inputs(users)).double().numpy()
    expected = (
        cfg.w_collaborative * _z(collab.astype(np.float64))
        + cfg.w_tower * _z(tower)
        + cfg.w_content * _z(st_pref @ engine.content_unit_.T.astype(np.float64))
        + cfg.w_genre * _z(np.asarray(engine.genre_mean_matrix_ @ genre.T).T)
    )
    ids = list(engine.catalog.ids)
    for i, u in enumerate(users):
        comp = engine.score_components(u, ids)
        np.testing.assert_allclose(comp["fused"], expected[i], atol=2e-4)
        parts = sum(comp[n] for n in ("collaborative", "tower", "content", "genre_affinity", "adapter_delta"))
        np.testing.assert_allclose(parts, comp["fused"], atol=2e-4)


def test_batch_workers_do_not_change_results(engine: sona.Sona) -> None:
    users = [str(u) for u in range(1, 944)] + ["nobody"]
    one = replace(engine.config, batch_workers=1)
    serial = engine.reweighted()
    serial.config = one
    threaded = engine.reweighted()
    threaded.config = replace(one, batch_workers=3)
    pd.testing.assert_frame_equal(serial.recommend_batch(users, k=7), threaded.recommend_batch(users, k=7))


def _events(user: str, items: list[str], start: datetime, prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"{prefix}-{user}-{i}" for i in range(len(items))],
            "user_id": user,
            "content_id": items,
            "timestamp": [start + timedelta(hours=i) for i in range(len(items))],
            "completion_rate": 0.9,
            "rating": 4.0,
        }
    )


def test_many_small_observes_equal_one_big_observe(
    fitted_dir: Path, movielens: tuple[sona.Catalog, pd.DataFrame]
) -> None:
    catalog = movielens[0]
    t0 = datetime(1998, 5, 1, tzinfo=UTC)
    batches = [
        _events(u, list(catalog.ids[j : j + 3]), t0 + timedelta(days=j), f"b{j}")
        for j, u in enumerate(["3", "newcomer", "3", "900", "newcomer", "12"] * 3)
    ]
    small = sona.Sona.load(fitted_dir)
    for b in batches:
        small.observe(b)
        small.observe(b)  # replays are ignored
    big = sona.Sona.load(fitted_dir).observe(pd.concat(batches, ignore_index=True))
    for u in ("3", "newcomer", "900", "12", "1"):
        pd.testing.assert_frame_equal(small.user_history(u), big.user_history(u))
    users = ["3", "newcomer", "900", "12", "1", "2"]
    pd.testing.assert_frame_equal(small.recommend_batch(users, k=10), big.recommend_batch(users, k=10))
    assert (small.interactions(users) != big.interactions(users)).nnz == 0
    pd.testing.assert_frame_equal(small.history_, big.history_)
    assert len(small.history_) == 100_000 + sum(len(b) for b in batches)
