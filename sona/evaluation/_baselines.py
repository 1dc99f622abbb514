"""Classical baselines under the engine's interface: Pop, ItemKNN and EASE.

They share the engine's protocol (``fit`` / ``observe`` / ``recommend`` /
``recommend_batch``), so :func:`sona.evaluation.evaluate` measures them the same
way. ``observe`` folds new users in (``x_u @ B`` needs no refit), which is the
"EASE-style fold-in" the new-user benchmark compares against. Unknown users
get the popularity order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from sona._ids import ContentId
from sona.catalog import Catalog
from sona.errors import ConfigError, DataError, NotFittedError, UnknownContentError, ValidationError
from sona.events import validate_events
from sona.features import engagement_weight
from sona.models import ease_weights, itemknn_weights, mask_rows, topk_rows
from sona.models._recommendation import Recommendation

__all__ = ["EASE", "ItemKNN", "Pop"]


class _Baseline:
    """Binary user × title matrix of qualifying events, and top-k over ``scores``."""

    _kind = "popular"

    def __init__(self, catalog: Catalog, *, min_completion: float = 0.3) -> None:
        self.catalog = catalog
        self.min_completion = min_completion

    def _frame(self, events: pd.DataFrame, *, allow_empty: bool) -> pd.DataFrame:
        frame = validate_events(events, allow_empty=allow_empty)
        pos = self.catalog.lookup(frame["content_id"])
        if (pos < 0).any():
            raise UnknownContentError(sorted(set(frame["content_id"][pos < 0]))[:20])
        if len(frame) == 0 and not allow_empty:
            raise DataError("events are empty")
        return frame

    def _rebuild(self) -> None:
        h = self.history_
        users = np.array(sorted(h["user_id"].unique()), dtype=object)
        self.user_index_ = {u: i for i, u in enumerate(users)}
        u = pd.Index(users).get_indexer(h["user_id"])
        i = self.catalog.index_of(h["content_id"].to_numpy())
        shape = (len(users), len(self.catalog))
        seen = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=shape)
        seen.data[:] = 1.0
        w = engagement_weight(
            h["completion_rate"], h["rating"], h["dismissed"], min_completion=self.min_completion
        )
        q = w > 0
        x = sp.csr_matrix((np.ones(int(q.sum()), np.float32), (u[q], i[q])), shape=shape)
        x.sum_duplicates()
        x.data[:] = 1.0
        self.seen_, self.x_ = seen.tocsr(), x.tocsr()

    def fit(self, events: pd.DataFrame) -> Self:
        """Learn from ``events``; replaces any earlier fit."""
        self.history_ = self._frame(events, allow_empty=False)
        self._rebuild()
        self.popularity_ = np.asarray(self.x_.sum(axis=0)).ravel().astype(np.float32)
        self._fit_items()
        return self

    def observe(self, events: pd.DataFrame) -> Self:
        """Add events (known or new users); item weights stay as fitted."""
        self._require_fitted()
        frame = self._frame(events, allow_empty=True)
        self.history_ = pd.concat([self.history_, frame], ignore_index=True)
        self._rebuild()
        return self

    def _require_fitted(self) -> None:
        if not hasattr(self, "popularity_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(events) first")

    def _fit_items(self) -> None:
        """Learn item-side weights from ``x_`` (subclasses)."""

    def _scores(self, x: sp.csr_matrix, user_ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """(len(user_ids), n_items) scores from the users' interaction rows ``x`` (or their ids)."""
        return np.broadcast_to(self.popularity_, (x.shape[0], len(self.popularity_))).astype(np.float32)

    def recommend_batch(
        self, user_ids: Sequence[str], k: int = 10, *, exclude_watched: bool = True, **_: object
    ) -> pd.DataFrame:
        """Top-k per user: ``user_id, rank, content_id, score``; unknown users get popularity."""
        self._require_fitted()
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValidationError("k", f"must be a positive integer, got {k!r}")
        ids = [str(u) for u in user_ids]
        rows = np.fromiter((self.user_index_.get(u, -1) for u in ids), np.int64, len(ids))
        r = np.maximum(rows, 0)
        frames = []
        for lo in range(0, len(ids), 2048):
            sl = slice(lo, lo + 2048)
            kn = sp.diags((rows[sl] >= 0).astype(np.float32))
            x = (kn @ self.x_[r[sl]]).tocsr()
            s = self._scores(x, ids[sl]).copy()
            cold = rows[sl] < 0
            s[cold] = self.popularity_
            if exclude_watched:
                seen = (kn @ self.seen_[r[sl]]).tocsr()
                seen.eliminate_zeros()
                mask_rows(s, seen)
            top = topk_rows(s, k)
            v = np.take_along_axis(s, top, axis=1)
            ok = np.isfinite(v).ravel()
            kk = top.shape[1]
            frames.append(
                pd.DataFrame(
                    {
                        "user_id": np.repeat(np.array(ids[sl], dtype=object), kk)[ok],
                        "rank": np.tile(np.arange(1, kk + 1), len(cold))[ok],
                        "content_id": self.catalog.ids[top.ravel()][ok],
                        "score": v.ravel()[ok].astype(np.float64),
                    }
                )
            )
        if not frames:
            return pd.DataFrame(columns=["user_id", "rank", "content_id", "score"])
        return pd.concat(frames, ignore_index=True)

    def recommend(self, user_id: str, k: int = 10, *, exclude_watched: bool = True) -> list[Recommendation]:
        """Top-k for one user as :class:`~sona.Recommendation` records."""
        f = self.recommend_batch([user_id], k, exclude_watched=exclude_watched)
        return [
            Recommendation(content_id=ContentId(c), score=float(s), recommendation_type=self._kind)  # type: ignore[arg-type]
            for c, s in zip(f["content_id"], f["score"], strict=True)
        ]


class Pop(_Baseline):
    """Most-viewed titles first, for everyone."""


class EASE(_Baseline):
    """Embarrassingly Shallow Autoencoder (Steck 2019) with L2 strength ``lam``."""

    _kind = "collaborative"

    def __init__(self, catalog: Catalog, lam: float = 300.0, *, min_completion: float = 0.3) -> None:
        super().__init__(catalog, min_completion=min_completion)
        if not lam > 0:
            raise ConfigError(f"EASE lam must be > 0, got {lam!r}")
        self.lam = lam

    def _fit_items(self) -> None:
        self.b_ = ease_weights(self.x_, self.lam)

    def _scores(self, x: sp.csr_matrix, user_ids: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.asarray(x @ self.b_, dtype=np.float32)


class ItemKNN(_Baseline):
    """Cosine item-item neighbours (top ``neighbors`` per title, shrunk by ``shrink``)."""

    _kind = "collaborative"

    def __init__(
        self, catalog: Catalog, neighbors: int = 100, shrink: float = 10.0, *, min_completion: float = 0.3
    ) -> None:
        super().__init__(catalog, min_completion=min_completion)
        if neighbors < 1:
            raise ConfigError(f"ItemKNN neighbors must be >= 1, got {neighbors!r}")
        self.neighbors, self.shrink = neighbors, shrink

    def _fit_items(self) -> None:
        self.b_ = itemknn_weights(self.x_, neighbors=self.neighbors, shrink=self.shrink)

    def _scores(self, x: sp.csr_matrix, user_ids: Sequence[str]) -> npt.NDArray[np.float32]:
        return (x @ self.b_).toarray().astype(np.float32)
