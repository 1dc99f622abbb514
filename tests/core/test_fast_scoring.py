"""The fast scoring path and incremental observe give the same answers as the plain definitions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
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


def test_training_view_of_the_full_history_is_the_served_score(engine: sona.Sona) -> None:
    users = ["1", "77", "500", "no-events"]
    history = engine.history_[engine.history_["user_id"].isin(users[:3])]
    view = engine.training_view(history, users)
    torch.testing.assert_close(view.tower_inputs[:3], engine.tower_inputs(users[:3]), rtol=0, atol=1e-6)
    assert view.fixed_scores is not None and view.fixed_scores.shape == (4, len(engine.catalog))
    with torch.no_grad():
        served = view.served(engine.scorer_(view.tower_inputs)).numpy()
    ids = list(engine.catalog.ids)
    for i, u in enumerate(users[:3]):
        np.testing.assert_allclose(served[i], engine.score_components(u, ids)["fused"], atol=2e-4)
    # an older part of the history gives other inputs; the engine's own profiles stay as they were
    before = engine.tower_inputs(["1"])
    older = engine.training_view(history[history["user_id"] == "1"].head(20), ["1"], fixed=False)
    assert older.fixed_scores is None
    assert not torch.allclose(older.tower_inputs, before)
    torch.testing.assert_close(engine.tower_inputs(["1"]), before)


def _session(user: str, item: str, completion: float, watch: float, at: datetime) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"session-{user}-{item}"],
            "user_id": user,
            "content_id": item,
            "timestamp": [at],
            "completion_rate": completion,
            "watch_seconds": watch,
        }
    )


def test_observe_max_progress_advances_a_stored_event(fitted_dir: Path) -> None:
    eng = sona.Sona.load(fitted_dir)
    t0 = datetime(1998, 5, 1, tzinfo=UTC)
    before = eng.profile("3").interaction_count
    eng.observe(_session("3", "50", 0.2, 600, t0), on_conflict="max_progress")
    assert eng.profile("3").interaction_count == before  # below min_completion: not qualifying yet
    eng.observe(_session("3", "50", 0.2, 600, t0), on_conflict="ignore")
    further = _session("3", "50", 0.9, 2700, t0 + timedelta(minutes=45))
    eng.observe(further, on_conflict="ignore")  # the default mode keeps the stored row
    assert eng.profile("3").interaction_count == before
    eng.observe(further, on_conflict="max_progress")
    advanced = eng.profile("3")
    assert advanced.interaction_count == before + 1
    row = eng.user_history("3").set_index("event_id").loc["session-3-50"]
    assert (row["completion_rate"], row["watch_seconds"]) == (0.9, 2700)
    assert row["timestamp"] == t0 + timedelta(minutes=45)
    recs = eng.recommend_batch(["3", "1"], k=10)
    # an equal or lower observation, and a replay, change nothing
    for lower in (further, _session("3", "50", 0.5, 9000, t0), _session("3", "50", 0.9, 2000, t0)):
        eng.observe(lower, on_conflict="max_progress")
        pd.testing.assert_frame_equal(eng.recommend_batch(["3", "1"], k=10), recs)
        np.testing.assert_array_equal(eng.profile("3").preference_vector, advanced.preference_vector)
    # the same watch time with more completion still counts as progress
    eng.observe(_session("3", "50", 1.0, 2700, t0 + timedelta(minutes=50)), on_conflict="max_progress")
    assert not np.allclose(eng.profile("3").preference_vector, advanced.preference_vector)
    assert (eng.user_history("3")["event_id"] == "session-3-50").sum() == 1
    assert len(eng.history_) == 100_001 and eng.history_["event_id"].is_unique

    # the result equals observing only the final state, in one go
    direct = sona.Sona.load(fitted_dir).observe(
        _session("3", "50", 1.0, 2700, t0 + timedelta(minutes=50)), on_conflict="max_progress"
    )
    ids = list(eng.catalog.ids)
    np.testing.assert_allclose(eng.score("3", ids), direct.score("3", ids), rtol=0, atol=1e-6)
    with pytest.raises(sona.ConfigError):
        eng.observe(further, on_conflict="newest")  # type: ignore[arg-type]


def test_observe_max_progress_on_fitted_history_and_within_one_batch(
    fitted_dir: Path, tmp_path: Path
) -> None:
    t0 = datetime(1998, 5, 1, tzinfo=UTC)
    eng = sona.Sona.load(fitted_dir).observe(_session("12", "7", 0.4, 10, t0), on_conflict="max_progress")
    eng = sona.Sona.load(eng.save(tmp_path / "m"))  # the session is now part of the loaded base history
    batch = pd.concat(
        [_session("12", "7", c, w, t0 + timedelta(minutes=m)) for c, w, m in ((0.6, 20, 5), (0.8, 30, 9))]
        + [_session("newcomer", "7", 0.7, 5, t0)],
        ignore_index=True,
    )
    eng.observe(batch.iloc[::-1], on_conflict="max_progress")
    hist = eng.history_.set_index("event_id")
    assert hist.loc["session-12-7", "completion_rate"] == 0.8 and hist.index.is_unique
    assert eng.known_user("newcomer") and eng.profile("newcomer").interaction_count == 1
    direct = sona.Sona.load(fitted_dir).observe(batch, on_conflict="max_progress")
    ids = list(eng.catalog.ids)
    for user in ("12", "newcomer"):
        np.testing.assert_allclose(eng.score(user, ids), direct.score(user, ids), rtol=0, atol=1e-6)
