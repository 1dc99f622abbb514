"""``score`` is a calibrated probability of the user's next interactions (issue 4), through the public API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sona


@pytest.fixture(scope="module")
def split(movielens: tuple[sona.Catalog, pd.DataFrame], fast_config: sona.SonaConfig):
    """Fit on each user's first 80% of events; the next 10%-of-history events are the future."""
    catalog, events = movielens
    ev = events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    pos = ev.groupby("user_id").cumcount().to_numpy()
    n = ev.groupby("user_id")["user_id"].transform("size").to_numpy()
    cut = np.floor(0.8 * n).astype(int)
    train = ev[pos < cut]
    future = ev[(pos >= cut) & (pos < cut + np.maximum(np.floor(0.1 * cut), 1))]
    return sona.Sona(catalog, fast_config).fit(train), train, future


def test_scores_are_calibrated_on_future_events(split) -> None:
    engine, train, future = split
    rng = np.random.default_rng(0)
    ids = np.asarray(engine.catalog.ids)
    seen = train.groupby("user_id")["content_id"].agg(set)
    nxt = future.groupby("user_id")["content_id"].agg(set)
    preds, labels, pos_s, neg_s = [], [], [], []
    for user in rng.choice(sorted(nxt.index), 150, replace=False):  # a test-side reference loop
        unseen = ids[~np.isin(ids, list(seen[user]))]
        s = engine.score(user, list(unseen))
        y = np.isin(unseen, list(nxt[user] - seen[user])).astype(float)
        preds.append(s)
        labels.append(y)
        pos_s.append(s[y == 1])
        neg_s.append(rng.choice(s[y == 0], 20, replace=False))
    p, y = np.concatenate(preds), np.concatenate(labels)
    assert np.concatenate(pos_s).mean() > 3 * np.concatenate(neg_s).mean()
    # aggregate calibration: the mean prediction matches the observed rate within a loose factor
    assert 0.5 < p.mean() / y.mean() < 2.0
    # binned reliability: higher bins hit more often, and stay within a factor 2 of their prediction
    # (the map is fitted on scores of a model that never saw the hidden tail: SonaConfig.calibration)
    edges = np.quantile(p, [0.0, 0.5, 0.9, 0.99, 1.0])
    rates = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        b = (p >= lo) & (p <= hi)
        rates.append(y[b].mean())
        assert y[b].mean() / 2 - 1e-3 <= p[b].mean() <= 2 * y[b].mean() + 1e-3
    assert rates == sorted(rates)


def test_calibration_keeps_ranking_and_old_saves_still_load(split, tmp_path: Path) -> None:
    engine = split[0]
    user = str(engine.users_[3])
    recs = engine.recommend(user, k=20)
    comp = engine.score_components(user, [r.content_id for r in recs])
    assert np.all(np.diff(comp["score"]) <= 0) and np.all(np.diff(comp["fused"]) <= 1e-6)
    np.testing.assert_allclose([r.score for r in recs], comp["score"], rtol=1e-5)
    d = engine.save(tmp_path / "m")
    ids = list(engine.catalog.ids[:300])
    np.testing.assert_array_equal(sona.Sona.load(d).score(user, ids), engine.score(user, ids))
    meta = json.loads((d / "engine.json").read_text())
    del meta["calibration"]  # an engine saved before calibration existed
    (d / "engine.json").write_text(json.dumps(meta))
    old = sona.Sona.load(d)
    s = old.score(user, ids)
    assert ((s >= 0) & (s <= 1)).all()
    assert (np.argsort(-s, kind="stable") == np.argsort(-engine.score(user, ids), kind="stable")).all()
    assert [r.content_id for r in old.recommend(user, k=20)] == [r.content_id for r in recs]


def test_the_calibration_sample_is_bounded_by_scored_cells_not_users() -> None:
    """Each sampled user is scored on the whole catalog: a larger catalog samples fewer users."""
    from sona.engine._calibrate import MAX_CELLS, MIN_USERS, holdout_mask
    from sona.features import EventArrays

    users, per_user = 4000, 20
    n = users * per_user
    ev = EventArrays(
        user=np.repeat(np.arange(users), per_user),
        item=np.zeros(n, dtype=np.int64),
        seconds=np.tile(np.arange(per_user, dtype=np.float64), users),
        completion=np.ones(n),
        rating=np.full(n, np.nan),
        dismissed=np.zeros(n, dtype=bool),
    )
    cfg = sona.SonaConfig(seed=3)

    def sampled(n_items: int) -> int:
        mask = holdout_mask(cfg, ev, users, n_items)
        assert mask.sum() == 2 * len(np.unique(ev.user[mask]))  # each sampled user's last 10 %
        return len(np.unique(ev.user[mask]))

    assert sampled(1_000) == 800  # 20 % of the users: the bound is far
    assert sampled(10_000) == MAX_CELLS // 10_000
    assert sampled(10 * MAX_CELLS) == MIN_USERS  # never fewer than enough to fit the map
