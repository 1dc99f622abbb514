"""Sequence-aware ranking: SASRec/GRU4Rec baselines, the engine's sequential source, tune()'s split.

The synthetic world is a cycle: every user watches titles c0 → c1 → … → c39 → c0 in
order, starting at a random title. Co-viewing alone cannot tell the next title from
the previous one (both are always watched together); order can.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sona
from sona.engine import read_model_id
from sona.evaluation import EASE, GRU4Rec, Pop, SASRec, evaluate, temporal_split, tune

N_ITEMS = 40


def _cycle_world(n_users: int = 80, length: int = 16, seed: int = 0) -> tuple[sona.Catalog, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    genres = ("Drama", "Comedy", "Action", "Horror")
    catalog = sona.Catalog(
        [
            sona.ContentItem(content_id=f"c{i}", title=f"Title {i}", genres=(genres[i % 4],))
            for i in range(N_ITEMS)
        ]
    )
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(N_ITEMS))
        for j in range(length):
            rows.append((f"u{u}", f"c{(start + j) % N_ITEMS}", t0 + timedelta(days=u, hours=j)))
    frame = pd.DataFrame(rows, columns=["user_id", "content_id", "timestamp"])
    return catalog, frame.assign(completion_rate=1.0)


def _next_title_hits(model: object, train: pd.DataFrame) -> float:
    """Share of users whose top-1 is the title after their last one in the cycle."""
    last = train.sort_values("timestamp").groupby("user_id")["content_id"].last()
    want = {u: f"c{(int(c[1:]) + 1) % N_ITEMS}" for u, c in last.items()}
    recs = model.recommend_batch(list(want), k=1)  # type: ignore[attr-defined]
    return float(np.mean([want[u] == c for u, c in zip(recs["user_id"], recs["content_id"], strict=True)]))


@pytest.mark.parametrize("cls", [SASRec, GRU4Rec])
def test_sequential_baselines_learn_the_order(cls: type) -> None:
    catalog, events = _cycle_world()
    train, test = temporal_split(events, 0.2)
    model = cls(catalog, dim=16, max_len=10, epochs=30, batch_size=64, dropout=0.0, lr=5e-3, seed=1)
    model.fit(train)
    assert model.epochs_run_ == 30
    assert _next_title_hits(model, train) > 0.8
    assert evaluate(model, test, k=3)["ndcg"] > 2 * evaluate(Pop(catalog).fit(train), test, k=3)["ndcg"]
    # observe folds a new user in without retraining: their sequence alone drives the ranking
    t = datetime(2025, 1, 1, tzinfo=UTC)
    new = pd.DataFrame(
        {
            "user_id": "new",
            "content_id": ["c5", "c6", "c7"],
            "timestamp": [t, t + timedelta(hours=1), t + timedelta(hours=2)],
        }
    ).assign(completion_rate=1.0)
    model.observe(new)
    assert model.recommend_batch(["new"], k=1)["content_id"].tolist() == ["c8"]


def test_sequential_training_stops_when_on_epoch_says_so() -> None:
    """Early stopping on validation: the callback sees the model after each epoch and ends the fit."""
    catalog, events = _cycle_world(n_users=20, length=8)
    train, held = temporal_split(events, 0.2)
    model = GRU4Rec(catalog, dim=8, hidden=8, max_len=5, epochs=50, dropout=0.0, seed=0)
    seen: list[tuple[int, float]] = []

    def check(epoch: int) -> bool:
        seen.append((epoch, evaluate(model, held, k=3)["ndcg"]))  # the net is usable mid-fit
        return epoch == 3

    model.on_epoch = check
    model.fit(train)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert (model.epochs_run_, model.stop_reason_) == (3, "on_epoch")
    model.on_epoch = None
    model.max_seconds = 0.0  # the CPU budget ends the fit after the first epoch
    model.fit(train)
    assert (model.epochs_run_, model.stop_reason_) == (1, "max_seconds")
    model.max_seconds = None
    model.epochs = 2
    model.fit(train)
    assert (model.epochs_run_, model.stop_reason_) == (2, "epochs")


def test_engine_sequential_source_ranks_the_next_title() -> None:
    catalog, events = _cycle_world()
    cfg = sona.SonaConfig(epochs=2, dim=8, hidden_dim=16, progress=False, calibration="off", seed=0)
    engine = sona.Sona(catalog, cfg).fit(events)
    seq_only = {w: 0.0 for w in ("w_collaborative", "w_tower", "w_content", "w_genre", "w_context")}
    with_seq = engine.reweighted(**seq_only, w_sequential=1.0)
    without = engine.reweighted(w_sequential=0.0)
    assert _next_title_hits(with_seq, events) == 1.0
    assert _next_title_hits(without, events) < 0.5
    # observe(): a new user's last titles drive the sequential source, no refit
    t = datetime(2025, 1, 1, tzinfo=UTC)
    new = pd.DataFrame(
        {"user_id": "new", "content_id": ["c20", "c21"], "timestamp": [t, t + timedelta(hours=1)]}
    ).assign(completion_rate=1.0)
    with_seq.observe(new)
    assert with_seq.recommend("new", k=1)[0].content_id == "c22"


def test_tune_chooses_on_a_split_of_the_events_it_is_given() -> None:
    catalog, events = _cycle_world(n_users=60)
    train, _test = temporal_split(events, 0.2)
    lambdas = (1.0, 30.0, 1000.0)
    result = tune(
        catalog,
        train,
        sona.SonaConfig(progress=False, dim=8, hidden_dim=16, seed=0),
        lambdas=lambdas,
        tower_epochs=(1,),
        weights={"w_sequential": (0.0, 1.0)},
        adapters=False,
    )
    # the validation is the last 20% of each user's *train* events: recompute it here
    fit, held = temporal_split(train, 0.2)
    expected = {lam: evaluate(EASE(catalog, lam).fit(fit), held, 10)["ndcg"] for lam in lambdas}
    got = result.trials[result.trials["stage"] == "ease_lambda"].set_index("params")["ndcg"]
    assert got.to_dict() == pytest.approx({f"{lam:g}": v for lam, v in expected.items()})
    assert result.config.ease_lambda == max(expected, key=expected.__getitem__)
    assert result.config.w_sequential == 1.0  # order predicts the held-out part of this world
    assert result.config.calibration == "refit" or result.config.calibration == sona.SonaConfig().calibration
    with pytest.raises(sona.ConfigError, match="w_"):
        tune(catalog, train, weights={"tower": (1.0,)}, adapters=False)


def _equal_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return a.shape == b.shape and (a != b).nnz == 0


def test_transitions_are_frozen_with_the_model_and_saved_with_it(tmp_path: Path) -> None:
    """Events observed after fit change a user's last titles, never the title-to-next-title weights."""
    catalog, events = _cycle_world(n_users=40)
    cfg = sona.SonaConfig(
        epochs=1, dim=8, hidden_dim=16, progress=False, calibration="off", seed=0, w_sequential=1.0
    )
    engine = sona.Sona(catalog, cfg).fit(events)
    fitted, model_id = engine.transitions_.copy(), engine.model_id_
    assert fitted[catalog.index_of(["c30"])[0], catalog.index_of(["c10"])[0]] == 0  # never followed
    t = datetime(2025, 1, 1, tzinfo=UTC)
    jumps = pd.DataFrame(  # orders the cycle never has: c30 → c10 → c25, by a fitted user and a new one
        {
            "user_id": ["u0"] * 3 + ["new"] * 3,
            "content_id": ["c30", "c10", "c25"] * 2,
            "timestamp": [t + timedelta(hours=h) for h in (0, 1, 2)] * 2,
        }
    ).assign(completion_rate=1.0)
    engine.observe(jumps)
    assert engine.model_id_ == model_id and _equal_csr(engine.transitions_, fitted)

    saved = engine.save(tmp_path / "model")
    assert read_model_id(saved) == model_id
    loaded = sona.Sona.load(saved)
    assert loaded.model_id_ == model_id and loaded.model_.content_hash() == model_id
    assert _equal_csr(loaded.transitions_, fitted)
    for user in ("u0", "u1", "new"):
        want = [(r.content_id, r.score) for r in engine.recommend(user, k=10)]
        assert [(r.content_id, r.score) for r in loaded.recommend(user, k=10)] == want

    # A directory saved before the transitions were frozen: rebuilt from its history (observed events too).
    old = tmp_path / "old"
    old.mkdir()
    for f in saved.iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    with np.load(saved / "model.npz") as npz:
        np.savez(old / "model.npz", **{k: npz[k] for k in npz.files if not k.startswith("transitions_")})
    legacy = sona.Sona.load(old)
    assert legacy.model_id_ == model_id  # the id engine.json recorded
    assert legacy.transitions_[catalog.index_of(["c30"])[0], catalog.index_of(["c10"])[0]] > 0
    assert not _equal_csr(legacy.transitions_, fitted)
