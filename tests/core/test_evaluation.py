"""Metrics, splits and baselines checked against numbers computed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import sona
from sona.evaluation import EASE, ItemKNN, Pop, evaluate, per_user_metrics, ranking_metrics, temporal_split


def _recs(rows: list[tuple[str, list[str]]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(u, r + 1, c) for u, items in rows for r, c in enumerate(items)],
        columns=["user_id", "rank", "content_id"],
    )


def test_ranking_metrics_match_hand_computation() -> None:
    recs = _recs([("a", ["x1", "x2", "x3"]), ("b", ["y1", "y2", "y3"]), ("c", ["x1", "y1", "z1"])])
    relevant = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "content_id": ["x2", "x9", "y1", "q"]})
    m = ranking_metrics(recs, relevant, k=3, n_items=20)
    # a: one hit at rank 2 of 2 relevant; b: hit at rank 1 of 1; c: no hit.
    ndcg_a = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["precision"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["ndcg"] == pytest.approx((ndcg_a + 1.0 + 0.0) / 3)
    assert ndcg_a == pytest.approx(0.386853, abs=1e-6)
    assert m["hit_rate"] == pytest.approx(2 / 3)
    assert m["coverage"] == pytest.approx(7 / 20)  # x1 x2 x3 y1 y2 y3 z1
    at1 = ranking_metrics(recs, relevant, k=1, n_items=20)
    assert at1["precision"] == pytest.approx(1 / 3) and at1["ndcg"] == pytest.approx(1 / 3)
    per_user = per_user_metrics(recs, relevant, k=3).set_index("user_id")
    assert per_user["ndcg"].to_dict() == pytest.approx({"a": ndcg_a, "b": 1.0, "c": 0.0})
    assert per_user["hits"].to_dict() == {"a": 1, "b": 1, "c": 0}


def _frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "content_id", "timestamp"]).assign(completion_rate=1.0)


def test_temporal_split_takes_each_users_latest_events() -> None:
    events = _frame(
        [("u", f"c{i}", 100 - i) for i in range(10)] + [("v", "c1", 5), ("v", "c2", 6), ("w", "c3", 1)]
    )
    train, test = temporal_split(events, test_fraction=0.2)
    # u: 10 events → 8 train, the 2 latest (timestamps 100, 99 → c0, c1) test; v: 2 → 1/1; w: 1 → train only.
    assert sorted(test[test.user_id == "u"]["content_id"]) == ["c0", "c1"]
    assert list(test[test.user_id == "v"]["content_id"]) == ["c2"]
    assert (train.user_id == "w").sum() == 1 and (test.user_id == "w").sum() == 0
    assert len(train) + len(test) == len(events)
    with pytest.raises(sona.ValidationError, match="test_fraction"):
        temporal_split(events, test_fraction=1.0)


def _tiny_catalog() -> sona.Catalog:
    return sona.Catalog(
        [sona.ContentItem(content_id=f"c{i}", title=f"T{i}", genres=("Drama",)) for i in range(5)]
    )


def test_evaluate_pop_by_hand() -> None:
    catalog = _tiny_catalog()
    train = _frame(
        [("a", "c0", 1), ("b", "c0", 1), ("b", "c1", 2), ("c", "c1", 1), ("c", "c2", 2), ("d", "c0", 3)]
    )
    test = _frame([("a", "c1", 9), ("d", "c4", 9)])
    pop = Pop(catalog).fit(train)
    # popularity: c0=3, c1=2, c2=1. a (saw c0) gets [c1, c2]; d (saw c0) gets [c1, c2].
    m = evaluate(pop, test, k=2)
    assert m["precision"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall"] == pytest.approx((1 + 0) / 2)
    assert m["ndcg"] == pytest.approx((1 + 0) / 2)
    assert m["hit_rate"] == pytest.approx(0.5)
    assert m["coverage"] == pytest.approx(2 / 5)


def test_baselines_share_the_interface(movielens: tuple[sona.Catalog, pd.DataFrame]) -> None:
    catalog, events = movielens
    train, test = temporal_split(events.head(20_000), 0.2)
    for model in (Pop(catalog), ItemKNN(catalog, neighbors=50), EASE(catalog, lam=200.0)):
        model.fit(train)
        recs = model.recommend_batch(["1", "2", "nobody"], k=5)
        assert len(recs) == 15
        assert recs.merge(train[["user_id", "content_id"]], on=["user_id", "content_id"]).empty
        assert len(model.recommend("1", k=3)) == 3
        m = evaluate(model, test, k=10)
        assert 0.0 <= m["ndcg"] <= 1.0 and m["coverage"] > 0
    ease = EASE(catalog, lam=200.0).fit(train)
    ease.observe(_frame([("new", "172", 1), ("new", "181", 2)]))
    assert set(ease.recommend_batch(["new"], k=5)["content_id"]).isdisjoint({"172", "181"})
    with pytest.raises(sona.NotFittedError):
        EASE(catalog).recommend_batch(["1"])
    with pytest.raises(sona.ValidationError, match="k"):
        ease.recommend_batch(["1"], k=0)
