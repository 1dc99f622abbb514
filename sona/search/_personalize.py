"""The personalization seam of search: one batched score call per request.

:class:`Personalizer` is structural, so ``sona.Sona`` (whose ``score(user_id,
content_ids)`` returns scores in [0, 1]) plugs in unchanged as long as the search
catalog is the engine's. A refreshed catalog can hold titles the engine was not
fitted on; :class:`EnginePersonalizer` wraps the engine for that case. Until a trained
engine is available, :class:`GenreAffinityPersonalizer` is a small real model: a
user's completion-weighted genre profile, matched to titles by cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from sona.catalog import Catalog
from sona.errors import DataError, NotFittedError, UnknownUserError

if TYPE_CHECKING:
    from sona.engine import Sona

__all__ = ["EnginePersonalizer", "GenreAffinityPersonalizer", "Personalizer"]


@runtime_checkable
class Personalizer(Protocol):
    """Scores titles for one user, batched: ``(n,)`` floats in [0, 1], aligned with ``content_ids``.

    Raises :class:`~sona.errors.UnknownUserError` for a user it knows nothing about.
    """

    def score(self, user_id: str, content_ids: Sequence[str]) -> npt.NDArray[np.floating]: ...


class GenreAffinityPersonalizer:
    """Cosine between a user's genre profile and each title's genres.

    The profile sums, per genre, the user's completion rates (a rated title also
    weighs ``rating / 5``; dismissed titles count nothing). Cosine of non-negative
    vectors already lies in [0, 1], so no further scaling is needed.
    """

    def fit(self, events: pd.DataFrame, catalog: Catalog) -> GenreAffinityPersonalizer:
        """Learn every user's profile from ``events`` (columns of :data:`sona.EVENT_COLUMNS`)."""
        for col in ("user_id", "content_id", "completion_rate"):
            if col not in events.columns:
                raise DataError(f"events lack column {col!r}")
        items = catalog.lookup(events["content_id"])
        keep = items >= 0
        weight = events["completion_rate"].to_numpy(np.float64, na_value=0.0)
        if "rating" in events.columns:
            rating = events["rating"].to_numpy(np.float64, na_value=np.nan)
            weight = weight * np.where(np.isnan(rating), 1.0, rating / 5.0)
        if "dismissed" in events.columns:
            weight = np.where(events["dismissed"].to_numpy(bool, na_value=False), 0.0, weight)
        users = pd.Categorical(events["user_id"].astype(str)[keep])
        x = sp.csr_matrix(
            (weight[keep], (users.codes, items[keep])),
            shape=(len(users.categories), len(catalog)),
        )
        genres = catalog.genre_matrix().astype(np.float64)
        profile = np.asarray((x @ genres).todense())
        norms = np.linalg.norm(profile, axis=1, keepdims=True)
        self.profiles_ = np.divide(profile, norms, out=np.zeros_like(profile), where=norms > 0)
        self.user_index_ = {str(u): i for i, u in enumerate(users.categories)}
        item_genres = np.asarray(genres.todense())
        inorm = np.linalg.norm(item_genres, axis=1, keepdims=True)
        self.item_genres_ = np.divide(item_genres, inorm, out=np.zeros_like(item_genres), where=inorm > 0)
        self.catalog_ = catalog
        return self

    def score(self, user_id: str, content_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        """Scores in [0, 1]; titles not in the fitted catalog score 0."""
        if not hasattr(self, "profiles_"):
            raise NotFittedError("GenreAffinityPersonalizer.fit has not been called")
        row = self.user_index_.get(str(user_id))
        if row is None:
            raise UnknownUserError(str(user_id))
        idx = self.catalog_.lookup(list(content_ids))
        out = np.zeros(len(idx), dtype=np.float64)
        ok = idx >= 0
        out[ok] = self.item_genres_[idx[ok]] @ self.profiles_[row]
        return np.clip(out, 0.0, 1.0)


class EnginePersonalizer:
    """A fitted ``sona.Sona`` as a :class:`Personalizer` that tolerates titles it was not fitted on.

    The search index is refreshed from the database while the engine keeps the
    catalog it was fitted with, and ``Sona.score`` raises ``UnknownContentError``
    for any other id. Only the titles the engine knows are scored; the rest get
    the mean of those scores (0 when it knows none), so personalization neither
    promotes nor buries them.
    """

    def __init__(self, engine: Sona) -> None:
        self.engine = engine

    def score(self, user_id: str, content_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        """Scores in [0, 1], aligned with ``content_ids``."""
        ids = np.asarray(list(content_ids), dtype=object)
        known = self.engine.catalog.lookup(ids.tolist()) >= 0
        out = np.zeros(len(ids), dtype=np.float64)
        if known.any():
            scores = np.asarray(self.engine.score(user_id, ids[known].tolist()), dtype=np.float64)
            out[known] = scores
            out[~known] = float(scores.mean())
        return out
