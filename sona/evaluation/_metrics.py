"""Ranking metrics at K over full rankings, vectorized over users."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from sona.errors import DataError, ValidationError
from sona.events import validate_events

__all__ = ["evaluate", "per_user_metrics", "ranking_metrics"]


class _Ranker(Protocol):
    def recommend_batch(self, user_ids: Sequence[str], k: int = 10, **kwargs: object) -> pd.DataFrame: ...


def per_user_metrics(recs: pd.DataFrame, relevant: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per user in ``relevant``: ``hits``, ``precision``, ``recall``, ``ndcg`` at ``k``.

    The per-user values behind :func:`ranking_metrics` (same definitions), for
    paired comparisons: two rankings of the same users differ by the mean of
    the per-user differences, with a standard error from their spread.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValidationError("k", f"must be a positive integer, got {k!r}")
    rel = relevant[["user_id", "content_id"]].astype(str).drop_duplicates()
    if len(rel) == 0:
        raise DataError("no relevant (test) events to evaluate against")
    r = recs[recs["rank"] <= k][["user_id", "rank", "content_id"]].copy()
    r["user_id"] = r["user_id"].astype(str)
    r["content_id"] = r["content_id"].astype(str)
    users = pd.Index(rel["user_id"].unique())
    n_rel = rel.groupby("user_id").size().reindex(users).to_numpy(dtype=np.float64)
    hits = r.merge(rel, on=["user_id", "content_id"], how="inner")
    hu = users.get_indexer(hits["user_id"])
    n_hits = np.bincount(hu, minlength=len(users)).astype(np.float64)
    dcg = np.bincount(
        hu, weights=1.0 / np.log2(hits["rank"].to_numpy(dtype=np.float64) + 1.0), minlength=len(users)
    )
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    idcg = discounts[np.minimum(n_rel, k).astype(np.int64) - 1]
    return pd.DataFrame(
        {
            "user_id": users,
            "hits": n_hits,
            "precision": n_hits / k,
            "recall": n_hits / n_rel,
            "ndcg": dcg / idcg,
        }
    )


def ranking_metrics(recs: pd.DataFrame, relevant: pd.DataFrame, k: int, n_items: int) -> dict[str, float]:
    """Precision, recall, NDCG, hit rate at ``k`` and catalogue coverage.

    ``recs`` has ``user_id, rank, content_id`` (rank 1 = best); ``relevant``
    has ``user_id, content_id`` (duplicates ignored). Averages run over the
    users in ``relevant``; a user without recommendations scores 0.

    - precision = hits / k
    - recall = hits / |relevant|
    - NDCG = sum over hits of 1/log2(rank + 1), divided by the ideal
      sum over ranks 1..min(k, |relevant|)
    - hit rate = share of users with at least one hit
    - coverage = distinct recommended titles / ``n_items``
    """
    per_user = per_user_metrics(recs, relevant, k)
    shown = recs[(recs["rank"] <= k) & recs["user_id"].astype(str).isin(per_user["user_id"])]
    return {
        "precision": float(per_user["precision"].mean()),
        "recall": float(per_user["recall"].mean()),
        "ndcg": float(per_user["ndcg"].mean()),
        "hit_rate": float((per_user["hits"] > 0).mean()),
        "coverage": float(shown["content_id"].astype(str).nunique() / n_items),
    }


def evaluate(
    model: _Ranker, test_events: pd.DataFrame, k: int = 10, *, n_items: int | None = None
) -> dict[str, float]:
    """Score ``model`` on ``test_events`` with full ranking over all unseen titles.

    Every test user gets one ``recommend_batch`` call over the whole catalog
    with watched titles excluded (never sampled negatives). Test titles the
    user already watched before (rewatches) are dropped from the relevant set,
    since excluded titles cannot be recommended. Exploration is switched off
    for models that support it.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``ndcg``, ``hit_rate``, ``coverage`` at k.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValidationError("k", f"must be a positive integer, got {k!r}")
    test = validate_events(test_events, allow_empty=False)
    users = list(pd.unique(test["user_id"]))
    kwargs: dict[str, object] = {"exclude_watched": True}
    if hasattr(model, "reweighted"):  # the Sona engine: pure exploitation while measuring
        kwargs["explore"] = False
    recs = model.recommend_batch(users, k=k, **kwargs)
    history = getattr(model, "history_", None)
    rel = test[["user_id", "content_id"]]
    if isinstance(history, pd.DataFrame):
        before = history[["user_id", "content_id"]].drop_duplicates()
        rel = rel.merge(before, on=["user_id", "content_id"], how="left", indicator=True)
        rel = rel[rel["_merge"] == "left_only"][["user_id", "content_id"]]
    if n_items is None:
        catalog = getattr(model, "catalog", None)
        if catalog is None:
            raise DataError("pass n_items for models without a catalog")
        n_items = len(catalog)
    return ranking_metrics(recs, rel, k, n_items)
