"""The Sona engine: fit the shared base model, keep user profiles current, rank titles.

Scoring. Every title is a candidate; each source gives a (users × titles)
score block and the blocks are fused linearly after per-user standardization:

=================  =========================================================
collaborative      item-item model (EASE, or ItemKNN for large catalogs) applied
                   to the user's engagement x decay row: ``x_u @ B``
tower              the learned user tower on the preference vector (LoRA point)
content            cosine of the preference vector and each title's content embedding
graph              shared people (actors, directors) with the user's titles
popularity         log view counts;  trending: the same over the last days
genre              the user's Laplace-smoothed genre affinities
context            request context (mood → genres, mobile → shorter titles)
=================  =========================================================

The fused value maps to a score in [0, 1] with a logistic squashing (monotone,
so ranks never change). Users with no qualifying events get the genre-diverse
popular list (cold start) instead.

LoRA hooks (``sona.lora`` builds on these; nothing here imports it eagerly):

- ``adapters_`` (None by default). When set and ``use_adapter`` is true, the
  tower logits of a batch come from
  ``adapters_.tower_logits(user_ids, x, scorer_)`` instead of ``scorer_(x)``,
  and ``score_components`` reports the difference as ``adapter_delta``.
- ``scorer_``: the :class:`~sona.models.TowerScorer`; its tower's ``fc1`` and
  ``fc2`` are the adapter targets.
- ``tower_inputs(user_ids, context)``: the exact (batch, in_dim) tensor the
  tower sees for those users, from their current profiles.
- ``training_view(events, user_ids)``: the same tower inputs and the fused
  score of every other source, for profiles built from only ``events`` (an
  older part of each user's history), as a :class:`~sona.models.TrainingView`.
- ``user_history(user_id)`` and ``interactions(user_ids)``: the events and the
  engagement-weight rows adapters train on; ``item_index(content_ids)`` maps ids.
- ``train_adapters(user_ids, **kwargs)`` forwards to ``sona.lora.train_adapters``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
import torch

from sona._event_log import EventLog
from sona._ids import ContentId, UserId
from sona.catalog import Catalog
from sona.errors import (
    ConfigError,
    DataError,
    NotFittedError,
    StorageError,
    UnknownContentError,
    ValidationError,
)
from sona.events import EVENT_COLUMNS, ViewingEvent, events_to_frame, validate_events
from sona.features import (
    DAYPARTS,
    EventArrays,
    ProfileState,
    cold_start_order,
    compute_profiles,
    content_features,
    context_item_scores,
    daypart_onehot,
    engagement_weight,
    l2_normalize,
    people_similarity,
    popularity_scores,
    side_features,
)
from sona.models import (
    BaseModelParams,
    FusedBatch,
    FusionWeights,
    ItemTables,
    TowerScorer,
    TrainingView,
    UserTower,
    ease_weights,
    itemknn_weights,
    mmr_rerank,
    train_base_model,
)
from sona.models._config import SonaConfig
from sona.models._recommendation import Recommendation, RecommendationType
from sona.profile import UserProfile

__all__ = ["Recommendation", "Sona", "SonaConfig"]

Context = Mapping[str, str]
#: What ``observe`` does with an ``event_id`` it already has.
OnConflict = Literal["ignore", "max_progress"]

#: Sources standardized per user, with their config weight and recommendation type.
_USER_SOURCES: tuple[tuple[str, str, RecommendationType], ...] = (
    ("collaborative", "w_collaborative", "collaborative"),
    ("tower", "w_tower", "personalized"),
    ("content", "w_content", "content"),
    ("graph", "w_graph", "graph"),
    ("genre", "w_genre", "content"),
)
_FORMAT_VERSION = 1
_Ranked = tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.bool_],
    npt.NDArray[np.bool_],
    dict[str, npt.NDArray[np.float32]],
]
_CHUNK = 1024
_VIEW_COLUMNS = ("completion_rate", "rating", "dismissed")
#: Columns a further-along observation of a stored event replaces (``observe(on_conflict="max_progress")``).
_PROGRESS = ("completion_rate", "watch_seconds", "timestamp")


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


def _splice_rows(
    a: sp.csr_matrix, rows: npt.NDArray[np.int64], b: sp.csr_matrix, n_rows: int
) -> sp.csr_matrix:
    """CSR ``a`` grown to ``n_rows`` rows, with rows ``rows`` (sorted, unique) replaced by ``b``'s rows.

    Splices the index arrays directly (a few vectorized copies), instead of
    rebuilding the matrix through sparse products.
    """
    len_a = np.zeros(n_rows, dtype=np.int64)
    len_a[: a.shape[0]] = np.diff(a.indptr)
    drop = np.zeros(n_rows, dtype=bool)
    drop[rows] = True
    lens = np.where(drop, 0, len_a)
    lens[rows] = np.diff(b.indptr)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    old_row = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    keep = ~drop[old_row]
    dest_a = (indptr[old_row] + np.arange(a.nnz) - a.indptr[old_row])[keep]
    b_local = np.repeat(np.arange(len(rows)), np.diff(b.indptr))
    dest_b = indptr[rows[b_local]] + np.arange(b.nnz) - b.indptr[b_local]
    data = np.empty(int(indptr[-1]), dtype=a.dtype)
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    data[dest_a], indices[dest_a] = a.data[keep], a.indices[keep]
    data[dest_b], indices[dest_b] = b.data, b.indices
    out = sp.csr_matrix((data, indices, indptr), shape=(n_rows, a.shape[1]))
    out.has_sorted_indices = True
    return out


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValidationError("k", f"must be a positive integer, got {k!r}")
    return int(k)


def _check_diversity(diversity: float) -> float:
    if isinstance(diversity, bool) or not isinstance(diversity, int | float) or not 0.0 <= diversity <= 1.0:
        raise ValidationError("diversity", f"must be a number in [0, 1], got {diversity!r}")
    return float(diversity)


def _as_frame(events: pd.DataFrame | Sequence[ViewingEvent], *, allow_empty: bool) -> pd.DataFrame:
    if isinstance(events, pd.DataFrame):
        frame = validate_events(events, allow_empty=True)
    elif isinstance(events, Sequence) and all(isinstance(e, ViewingEvent) for e in events):
        frame = events_to_frame(events)
    else:
        raise DataError("events must be a pandas DataFrame or a list of ViewingEvent")
    if len(frame) == 0 and not allow_empty:
        raise DataError("events are empty: fit needs at least one viewing event")
    return frame


class Sona:
    """Personalized ranking over one catalog.

    Parameters
    ----------
    catalog
        The titles; every event and every request names titles from it.
    config
        Hyperparameters (:class:`SonaConfig`); defaults suit catalogs of 1k-10k titles.

    Notes
    -----
    ``fit`` trains the shared parts (content embeddings, user tower,
    item-item weights) once. ``observe`` only recomputes the touched users'
    profile rows, so new users are served without retraining. See the module
    docstring for the fusion and the LoRA hooks.
    """

    def __init__(self, catalog: Catalog, config: SonaConfig | None = None) -> None:
        if not isinstance(catalog, Catalog):
            raise ConfigError("catalog must be a sona.Catalog")
        if config is not None and not isinstance(config, SonaConfig):
            raise ConfigError("config must be a sona.SonaConfig")
        self.catalog = catalog
        self.config = config or SonaConfig()
        self.adapters_: Any = None

    # ------------------------------------------------------------------ fit
    def fit(self, events: pd.DataFrame | Sequence[ViewingEvent]) -> Self:
        """Train the shared base model on ``events``; replaces anything learned before.

        Raises
        ------
        DataError
            ``events`` is empty or malformed (``ValidationError`` names the field).
        UnknownContentError
            An event names a title missing from the catalog.
        FitError
            Training could not produce a usable model.
        """
        cfg = self.config
        frame = _as_frame(events, allow_empty=False)
        self._item_positions(frame)
        frame = frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
        items = self.catalog.index_of(frame["content_id"].to_numpy())
        users = np.array(sorted(frame["user_id"].unique()), dtype=object)
        user_pos = pd.Index(users).get_indexer(frame["user_id"])
        self.users_ = users
        self.user_index_ = {u: i for i, u in enumerate(users)}
        self.history_ = frame
        ev = self._arrays(frame, user_pos, items)
        n_users, n_items = len(users), len(self.catalog)

        self.genre_matrix_ = self.catalog.genre_matrix().astype(np.float32).tocsr()
        gsum = np.asarray(self.genre_matrix_.sum(axis=1)).ravel()
        self.genre_mean_matrix_ = (sp.diags(1.0 / np.maximum(gsum, 1.0)) @ self.genre_matrix_).tocsr()
        self.years_ = self.catalog.years()
        durations = [np.nan if it.duration_seconds is None else it.duration_seconds for it in self.catalog]
        self.durations_ = np.array(durations, dtype=np.float32)

        # Profiles need content embeddings; a zero table first gives the weight rows to train on.
        tmp = self._profiles(ev, n_users, np.zeros((n_items, 1), np.float32))
        w_event = engagement_weight(ev.completion, ev.rating, ev.dismissed, min_completion=cfg.min_completion)
        order = self._order_matrix(ev, w_event, n_users, n_items)
        trained = train_base_model(
            tmp.weights,
            order,
            side_features(tmp.hourly, tmp.recency),
            content_features(self.catalog, people_min_count=cfg.people_min_count),
            BaseModelParams(
                dim=cfg.dim,
                hidden_dim=cfg.hidden_dim,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                input_dropout=cfg.input_dropout,
                cut_low=cfg.cut_low,
                reconstruct_share=cfg.reconstruct_share,
                seed=cfg.seed,
                progress=cfg.progress,
                threads=cfg.train_threads,
            ),
        )
        self.content_embeddings_ = trained.content_embeddings
        self.scorer_ = trained.scorer
        self._set_item_state(ev, w_event, tmp.weights)
        self.state_ = self._profiles(ev, n_users, self.content_embeddings_)
        return self

    def _set_item_state(
        self, ev: EventArrays, w_event: npt.NDArray[np.float32], weights: sp.csr_matrix
    ) -> None:
        cfg = self.config
        n_items = len(self.catalog)
        self.content_unit_ = l2_normalize(self.content_embeddings_)
        binary = weights.copy()
        binary.data[:] = 1.0
        kind = cfg.collaborative
        if kind == "auto":
            kind = "ease" if n_items <= cfg.dense_collab_max_items else "itemknn"
        self.collab_: npt.NDArray[np.float32] | sp.csr_matrix = (
            ease_weights(binary, cfg.ease_lambda)
            if kind == "ease"
            else itemknn_weights(binary, neighbors=cfg.knn_neighbors)
        )
        self.graph_ = people_similarity(self.catalog, min_count=cfg.people_min_count)
        self.popularity_ = popularity_scores(ev.item, w_event, n_items)
        recent = ev.seconds >= ev.seconds.max() - cfg.trending_days * 86400.0
        self.trending_ = popularity_scores(ev.item[recent], w_event[recent], n_items)
        self.cold_order_ = cold_start_order(self.popularity_, self.genre_matrix_)
        cold_rank = np.empty(n_items, dtype=np.float32)
        cold_rank[self.cold_order_] = -np.arange(n_items, dtype=np.float32)
        self.cold_rank_ = cold_rank

    def _item_positions(self, frame: pd.DataFrame) -> npt.NDArray[np.int64]:
        pos = self.catalog.lookup(frame["content_id"])
        if (pos < 0).any():
            raise UnknownContentError(sorted(set(frame["content_id"][pos < 0].astype(str)))[:20])
        return pos

    @staticmethod
    def _arrays(
        frame: pd.DataFrame, user_pos: npt.NDArray[np.int64], items: npt.NDArray[np.int64]
    ) -> EventArrays:
        ts = frame["timestamp"]
        seconds = (ts.astype("int64") // 10**3).to_numpy(dtype=np.float64) / 1e6
        return EventArrays(
            user=np.asarray(user_pos, dtype=np.int64),
            item=np.asarray(items, dtype=np.int64),
            seconds=seconds,
            completion=frame["completion_rate"].to_numpy(dtype=np.float64),
            rating=frame["rating"].to_numpy(dtype=np.float64),
            dismissed=frame["dismissed"].to_numpy(dtype=bool),
        )

    def _profiles(self, ev: EventArrays, n_users: int, emb: npt.NDArray[np.float32]) -> ProfileState:
        cfg = self.config
        return compute_profiles(
            ev,
            n_users,
            len(self.catalog),
            content_embeddings=emb,
            genre_matrix=self.genre_matrix_,
            release_years=self.years_,
            min_completion=cfg.min_completion,
            decay_base=cfg.decay_base,
            decay_period_days=cfg.decay_period_days,
            genre_smoothing=cfg.genre_smoothing,
        )

    @staticmethod
    def _order_matrix(
        ev: EventArrays, w_event: npt.NDArray[np.float32], n_users: int, n_items: int
    ) -> sp.csr_matrix:
        """Position of each user's first qualifying view of a title, as a fraction of their history."""
        q = np.flatnonzero(w_event > 0)
        u, it, s = ev.user[q], ev.item[q], ev.seconds[q]
        o = np.lexsort((s, u))
        u, it = u[o], it[o]
        first = pd.DataFrame({"u": u, "i": it}).duplicated().to_numpy()
        u, it = u[~first], it[~first]
        start = np.searchsorted(u, u, side="left")
        count = np.bincount(u, minlength=n_users)[u]
        frac = (np.arange(len(u)) - start) / np.maximum(count, 1)
        m = sp.csr_matrix((frac.astype(np.float32), (u, it)), shape=(n_users, n_items))
        return m

    # -------------------------------------------------------------- observe
    def _require_fitted(self) -> None:
        if not hasattr(self, "state_"):
            raise NotFittedError("this Sona engine is not fitted yet; call fit(events) first")

    def observe(
        self, events: pd.DataFrame | Sequence[ViewingEvent], *, on_conflict: OnConflict = "ignore"
    ) -> Self:
        """Add events for known or new users; only their profile rows are recomputed.

        The shared model (embeddings, tower, item-item weights) is not retrained.

        Parameters
        ----------
        on_conflict
            What an ``event_id`` the engine already has does. ``"ignore"``
            (default): nothing, so replays are safe. ``"max_progress"``: for
            events that grow while they are observed (a playback session), the
            stored event takes the new ``completion_rate``, ``watch_seconds``
            and ``timestamp`` when the new one is further along
            (``(completion_rate, watch_seconds)`` compared in that order), and
            its user's profile is recomputed; an equal or lower one changes
            nothing, so replays stay safe. Same rule as
            ``Storage.add_events(on_conflict="max_progress")``.

        Raises
        ------
        NotFittedError, DataError, UnknownContentError, ConfigError (bad ``on_conflict``)
        """
        self._require_fitted()
        if on_conflict not in ("ignore", "max_progress"):
            raise ConfigError(f"on_conflict must be 'ignore' or 'max_progress', got {on_conflict!r}")
        frame = _as_frame(events, allow_empty=True)
        if len(frame) == 0:
            return self
        self._item_positions(frame)
        log = self._log()
        replaced = 0
        if on_conflict == "max_progress":
            frame, replaced = self._progressed(log, frame)
        else:
            frame = log.unseen(frame)
        if len(frame) == 0:
            return self
        new_users = sorted(set(frame["user_id"].unique()) - set(self.user_index_))
        if new_users:
            self.users_ = np.concatenate([self.users_, np.array(new_users, dtype=object)])
            base = len(self.user_index_)
            self.user_index_.update({u: base + i for i, u in enumerate(new_users)})
        self.__dict__["_log_"] = log.append(frame, replaced=replaced)
        touched = np.array(sorted(self.user_index_[u] for u in frame["user_id"].unique()), dtype=np.int64)
        self._refresh_users(touched)
        return self

    @staticmethod
    def _progressed(log: EventLog, frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        """Rows to append for ``max_progress``: unseen events, then advanced stored rows (and their count).

        Within ``frame`` an id keeps its furthest record. An advanced row is the
        stored row with the new progress columns, so it keeps its user and title.
        """
        frame = frame.sort_values(["completion_rate", "watch_seconds"], ascending=False, kind="stable")
        frame = frame.drop_duplicates("event_id").sort_index()
        stored = log.stored(frame["event_id"]).set_index("event_id", drop=False)
        known = frame["event_id"].isin(stored.index).to_numpy()
        seen = frame[known]
        old = stored.loc[seen["event_id"].to_numpy()]
        c_new, c_old = seen["completion_rate"].to_numpy(), old["completion_rate"].to_numpy()
        w_new, w_old = seen["watch_seconds"].to_numpy(), old["watch_seconds"].to_numpy()
        ahead = (c_new > c_old) | ((c_new == c_old) & (w_new > w_old))
        moved = old[ahead].reset_index(drop=True)
        for col in _PROGRESS:
            moved[col] = seen[col].array[ahead]
        fresh = frame[~known]
        return pd.concat([fresh, moved], ignore_index=True), len(moved)

    def _log(self) -> EventLog:
        log = self.__dict__.get("_log_")
        if log is None:
            raise NotFittedError("this Sona engine is not fitted yet; call fit(events) first")
        return log

    @property
    def history_(self) -> pd.DataFrame:
        """Every event seen by ``fit``/``observe``, sorted by user then time.

        Assembled lazily: ``observe`` appends in time proportional to the new
        events, and the first read afterwards merges them (O(all events) once).
        """
        log = self.__dict__.get("_log_")
        if log is None:
            raise AttributeError("history_")  # not fitted: hasattr(engine, "history_") is False
        return log.frame()

    @history_.setter
    def history_(self, frame: pd.DataFrame) -> None:
        self.__dict__["_log_"] = EventLog(frame)

    def _refresh_users(self, rows: npt.NDArray[np.int64]) -> None:
        """Recompute the profile rows of ``rows`` (sorted positions) from those users' events only."""
        n_users = len(self.user_index_)
        local_ids = self.users_[rows]
        sub = self._log().for_users([str(u) for u in local_ids])
        local_pos = pd.Index(local_ids).get_indexer(sub["user_id"])
        ev = self._arrays(sub, local_pos, self.catalog.index_of(sub["content_id"].to_numpy()))
        fresh = self._profiles(ev, len(rows), self.content_embeddings_)
        old = self.state_
        grow = n_users - old.preference.shape[0]

        def dense(a: npt.NDArray[Any], b: npt.NDArray[Any], fill: float = 0.0) -> npt.NDArray[Any]:
            # a copy (memcpy), so readers holding the previous state never see half an update
            if grow:
                pad = np.full((grow, *a.shape[1:]), fill, dtype=a.dtype)
                a = np.concatenate([a, pad])
            else:
                a = a.copy()
            a[rows] = b
            return a

        def sparse(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
            return _splice_rows(a, rows, b, n_users)

        self.state_ = ProfileState(
            weights=sparse(old.weights, fresh.weights),
            seen=sparse(old.seen, fresh.seen),
            preference=dense(old.preference, fresh.preference),
            genre_affinity=dense(old.genre_affinity, fresh.genre_affinity),
            hourly=dense(old.hourly, fresh.hourly),
            weekday=dense(old.weekday, fresh.weekday),
            seasonal=dense(old.seasonal, fresh.seasonal),
            recency=dense(old.recency, fresh.recency),
            qualifying=dense(old.qualifying, fresh.qualifying),
            last_seconds=dense(old.last_seconds, fresh.last_seconds, -np.inf),
        )

    # ------------------------------------------------------------- lookups
    def known_user(self, user_id: str) -> bool:
        """True when ``user_id`` has any event seen by ``fit`` or ``observe``."""
        self._require_fitted()
        return str(user_id) in self.user_index_

    def _rows(self, user_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        get = self.user_index_.get
        return np.fromiter((get(str(u), -1) for u in user_ids), dtype=np.int64, count=len(user_ids))

    def item_index(self, content_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Catalog positions of ``content_ids`` (columns of score arrays); unknown ids raise."""
        return self.catalog.index_of(list(content_ids))

    def user_history(self, user_id: str) -> pd.DataFrame:
        """Events of ``user_id`` seen by ``fit``/``observe``, oldest first (empty for unknown users)."""
        return self._log().for_users([str(user_id)])

    def interactions(self, user_ids: Sequence[str]) -> sp.csr_matrix:
        """(len(user_ids), n_items) engagement x decay rows; all-zero rows for unknown users."""
        self._require_fitted()
        rows = self._rows(user_ids)
        out = self.state_.weights[np.maximum(rows, 0)].tocsr()
        return (sp.diags((rows >= 0).astype(np.float32)) @ out).tocsr()

    def profile(self, user_id: str) -> UserProfile:
        """The user's current profile. Unknown users raise :class:`~sona.errors.UnknownUserError`."""
        return self.profiles([user_id])[0]

    def profiles(self, user_ids: Sequence[str]) -> list[UserProfile]:
        """Profiles of several users; unknown users raise :class:`~sona.errors.UnknownUserError`."""
        from sona.errors import UnknownUserError

        self._require_fitted()
        rows = self._rows(list(user_ids))
        if (rows < 0).any():
            raise UnknownUserError(str(list(user_ids)[int(np.flatnonzero(rows < 0)[0])]))
        st = self.state_
        genres = self.catalog.genres
        out = []
        for u, r in zip(user_ids, rows, strict=True):  # builds result objects, no math
            last = st.last_seconds[r]
            out.append(
                UserProfile(
                    user_id=UserId(str(u)),
                    preference_vector=st.preference[r].copy(),
                    genre_affinities={g: float(v) for g, v in zip(genres, st.genre_affinity[r], strict=True)},
                    temporal_patterns={
                        "hourly": st.hourly[r].tolist(),
                        "weekday": st.weekday[r].tolist(),
                        "seasonal": st.seasonal[r].tolist(),
                        "recency_bias": [float(st.recency[r])],
                    },
                    interaction_count=int(st.qualifying[r]),
                    updated_at=datetime.fromtimestamp(last, tz=UTC)
                    if np.isfinite(last)
                    else datetime.now(UTC),
                )
            )
        return out

    # ------------------------------------------------------------- scoring
    def tower_inputs(self, user_ids: Sequence[str], context: Context | None = None) -> torch.Tensor:
        """(batch, in_dim) tower input: preference vector, day-part shares, recency bias.

        A ``context['time_of_day']`` replaces the day-part shares by a one-hot;
        unknown users get a zero preference vector and uniform day parts.
        """
        self._require_fitted()
        rows = self._rows(list(user_ids))
        return torch.from_numpy(self._tower_inputs_rows(rows, context))

    def training_view(
        self, events: pd.DataFrame, user_ids: Sequence[str], *, fixed: bool = True
    ) -> TrainingView:
        """The served ranking's inputs for ``user_ids`` as if ``events`` were their whole history.

        Learners of the tower (per-user LoRA adapters) train on an older part of
        a user's history and check themselves on a later part. This builds
        profiles from exactly ``events`` (the engine's own state is untouched)
        and returns the tower inputs and, with ``fixed``, the fused score of
        every other source, computed by the same fusion that serves
        ``recommend``: ``view.served(tower_logits)`` is the served fused score.

        Parameters
        ----------
        events
            Rows with ``user_id``, ``content_id``, ``timestamp``,
            ``completion_rate``, ``rating`` and ``dismissed``; rows of other
            users are ignored. A user without rows gets an empty-history profile.
        user_ids
            Row order of the result.
        fixed
            Also compute ``fixed_scores`` (n_users, n_items); False skips that work.

        Raises
        ------
        NotFittedError, DataError (missing columns), UnknownContentError
        """
        self._require_fitted()
        missing = sorted({"user_id", "content_id", "timestamp", *_VIEW_COLUMNS} - set(events.columns))
        if missing:
            raise DataError(f"training_view needs event columns {missing}")
        users = [str(u) for u in user_ids]
        pos = pd.Index(users, dtype=object).get_indexer(events["user_id"].astype(str))
        ev = events.loc[pos >= 0].reset_index(drop=True)
        arrays = self._arrays(ev, pos[pos >= 0], self._item_positions(ev))
        st = self._profiles(arrays, len(users), self.content_embeddings_)
        x = np.hstack([st.preference, side_features(st.hourly, st.recency)]).astype(np.float32)
        scores = None
        if fixed:
            fz = self._item_tables().fuse(
                tower_user=None,
                preference=st.preference.astype(np.float32),
                genre_affinity=st.genre_affinity.astype(np.float32),
                interactions=st.weights,
                weights=self._fusion_weights(),
            )
            scores = fz.block.add_(torch.from_numpy(fz.offset.astype(np.float32))[:, None])
        return TrainingView(
            user_ids=users,
            tower_inputs=torch.from_numpy(x),
            fixed_scores=scores,
            tower_weight=float(self.config.w_tower),
        )

    def _tower_inputs_rows(
        self, rows: npt.NDArray[np.int64], context: Context | None
    ) -> npt.NDArray[np.float32]:
        st = self.state_
        known = rows >= 0
        r = np.maximum(rows, 0)
        pref = np.where(known[:, None], st.preference[r], 0.0)
        side = side_features(st.hourly[r], st.recency[r])
        side[~known] = np.array([*(np.full(len(DAYPARTS), 1.0 / len(DAYPARTS))), 0.0], dtype=np.float32)
        tod = daypart_onehot(context)
        if tod is not None:
            side[:, : len(DAYPARTS)] = tod
        return np.hstack([pref, side]).astype(np.float32)

    def _batch_workers(self, n_users: int) -> int:
        """Threads for a batch: ``config.batch_workers`` (0 = one per CPU core), never more than needed."""
        w = self.config.batch_workers or (os.cpu_count() or 1)
        return max(1, min(w, -(-n_users // 256)))

    def _tower_logits(
        self, user_ids: Sequence[str], x: npt.NDArray[np.float32], use_adapter: bool
    ) -> tuple[npt.NDArray[np.float32], torch.Tensor | None, torch.Tensor | None]:
        """Base user embeddings; with an attached adapter set, also adapted and base logits.

        The base tower's logits are not materialized otherwise: they enter the
        fused score through :class:`~sona.models.ItemTables` (one GEMM). Adapted
        logits come, batched, from ``adapters_.tower_logits`` (the LoRA hook).
        """
        xt = torch.from_numpy(x)
        with torch.no_grad():
            base = self.scorer_.user_embedding(xt).numpy()
            if not (use_adapter and self.adapters_ is not None):
                return base, None, None
            lock = self.__dict__.setdefault("_adapter_lock", threading.Lock())
            with lock:  # adapter sets load lazily; batch workers take turns
                got = self.adapters_.tower_logits([str(u) for u in user_ids], xt, self.scorer_)
            got = got.detach() if isinstance(got, torch.Tensor) else torch.from_numpy(np.asarray(got))
            return base, got.to(torch.float32), self.scorer_(xt)

    def _item_tables(self) -> ItemTables:
        """Item-side fusion state, rebuilt whenever a learned table it derives from was replaced or edited."""
        sc = self.scorer_
        parts = (sc, self.collab_, self.content_unit_, self.genre_mean_matrix_, self.graph_)
        key = (
            *(id(p) for p in parts),
            id(self.popularity_),
            id(self.trending_),
            sc.item_embeddings._version,
            sc.item_bias._version,
        )
        cached = self.__dict__.get("_fusion_")
        if cached is not None and cached[0] == key:
            return cached[1]
        tables = ItemTables(
            tower_items=sc.item_embeddings.detach().numpy(),
            tower_bias=sc.item_bias.detach().numpy(),
            content_items=self.content_unit_,
            genre_items=np.asarray(self.genre_mean_matrix_.todense(), dtype=np.float32),
            popularity=self.popularity_,
            trending=self.trending_,
            collaborative=self.collab_,
            graph=self.graph_,
        )
        self.__dict__["_fusion_"] = (key, tables)
        return tables

    def _fusion_weights(self) -> FusionWeights:
        c = self.config
        return FusionWeights(
            collaborative=c.w_collaborative,
            tower=c.w_tower,
            content=c.w_content,
            graph=c.w_graph,
            genre_affinity=c.w_genre,
            popularity=c.w_popularity,
            trending=c.w_trending,
            context=c.w_context,
        )

    def _fuse(
        self,
        user_ids: Sequence[str],
        rows: npt.NDArray[np.int64],
        context: Context | None,
        use_adapter: bool,
        *,
        detail: bool,
        out: torch.Tensor | None = None,
    ) -> FusedBatch:
        """Fused (batch, n_items) scores of these users; with ``detail`` also splittable by source."""
        cfg, st = self.config, self.state_
        known = rows >= 0
        r = np.maximum(rows, 0)
        w_rows = st.weights[r]
        if not known.all():
            w_rows = (sp.diags(known.astype(np.float32)) @ w_rows).tocsr()
        base = adapted = base_logits = None
        if cfg.w_tower or detail:
            x = self._tower_inputs_rows(rows, context)
            base, adapted, base_logits = self._tower_logits(user_ids, x, use_adapter)
        ctx = None
        if context:
            ctx = context_item_scores(context, self.genre_matrix_, self.catalog.genres, self.durations_)
        genre = st.genre_affinity[r]
        if not known.all():  # unknown users: no taste yet, so zero preference and uniform genres
            genre = np.where(known[:, None], genre, np.float32(1.0 / max(genre.shape[1], 1)))
        return self._item_tables().fuse(
            tower_user=base,
            preference=np.where(known[:, None], st.preference[r], 0.0).astype(np.float32),
            genre_affinity=genre.astype(np.float32),
            interactions=w_rows,
            weights=self._fusion_weights(),
            adapted=adapted,
            base_logits=base_logits,
            context=ctx,
            detail=detail,
            out=out,
        )

    def _calibrate(self, fused: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Monotone map of fused scores to [0, 1]: about 3 standard deviations above a user's mean → 0.5."""
        cfg = self.config
        total = sum(abs(getattr(cfg, w)) for _, w, _ in _USER_SOURCES) + abs(cfg.w_popularity)
        return _sigmoid(2.0 * (fused / max(total, 1e-6)) - 6.0)

    def score(
        self,
        user_id: str,
        content_ids: Sequence[str],
        *,
        context: Context | None = None,
        use_adapter: bool = True,
    ) -> npt.NDArray[np.float32]:
        """Personalization score in [0, 1] of each title in ``content_ids`` for ``user_id``.

        Raises
        ------
        UnknownContentError
            Naming the ids not in the catalog (a ``KeyError`` subclass).
        """
        return self.score_components(user_id, content_ids, context=context, use_adapter=use_adapter)["score"]

    def score_components(
        self,
        user_id: str,
        content_ids: Sequence[str],
        *,
        context: Context | None = None,
        use_adapter: bool = True,
    ) -> dict[str, npt.NDArray[np.float32]]:
        """The score of each title and what it is made of, in fused-score units.

        Keys: ``base_relevance`` (collaborative, tower, content, graph,
        popularity, trending), ``adapter_delta`` (zeros without adapters),
        ``genre_affinity``, ``context``, the per-source contributions, ``fused``
        (their sum) and ``score`` (fused mapped to [0, 1]).
        """
        self._require_fitted()
        if isinstance(content_ids, str):
            content_ids = [content_ids]
        cols = self.catalog.index_of(list(content_ids))
        uid = str(user_id)
        fz = self._fuse([uid], self._rows([uid]), context, use_adapter, detail=True)
        out = {k: v[0] for k, v in fz.parts_at(cols[None, :]).items()}
        base_names = ("collaborative", "tower", "content", "graph", "popularity", "trending")
        out["base_relevance"] = sum(
            (out[n] for n in base_names if n in out), start=np.zeros(len(cols), np.float32)
        ).astype(np.float32)
        fused = fz.fused_at(cols[None, :])[0]
        out["fused"] = fused
        out["score"] = self._calibrate(fused)
        return out

    # ------------------------------------------------------------- ranking
    def _explore_mask(self, user_ids: Sequence[str], rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Deterministic per-(user, history length) coin flips with a decaying epsilon."""
        cfg = self.config
        n = np.where(rows >= 0, self.state_.qualifying[np.maximum(rows, 0)], 0)
        eps = cfg.explore_epsilon * np.power(0.5, n / cfg.explore_halflife)
        draws = np.array(
            [
                int.from_bytes(hashlib.blake2b(f"{cfg.seed}|{u}|{c}".encode(), digest_size=8).digest(), "big")
                / 2.0**64
                for u, c in zip(user_ids, n, strict=True)
            ]
        )
        return draws < eps

    def _rank(
        self,
        user_ids: Sequence[str],
        k: int,
        *,
        exclude_watched: bool,
        diversity: float,
        context: Context | None,
        use_adapter: bool,
        explore: bool | None,
        detail: bool = False,
        out: torch.Tensor | None = None,
    ) -> _Ranked:
        """Top-k (batch, k) item positions, scores, cold rows, explore rows, and the parts when ``detail``."""
        cfg, st = self.config, self.state_
        rows = self._rows(user_ids)
        known = rows >= 0
        cold = ~known | (st.qualifying[np.maximum(rows, 0)] == 0)
        fz = self._fuse(user_ids, rows, context, use_adapter, detail=detail, out=out)
        ranking = fz.block  # ranks like the fused score; masked in place below
        cold_rows = np.flatnonzero(cold)
        cold_block = None
        if len(cold_rows):
            ct = torch.from_numpy(cold_rows)
            cold_block = ranking[ct].clone()
            ranking[ct] = torch.from_numpy(self.cold_rank_)
        if exclude_watched and known.any():
            seen = st.seen[np.maximum(rows, 0)]
            counts = np.diff(seen.indptr) * known
            if counts.any():
                b_idx = np.repeat(np.arange(len(rows)), counts)
                keep = np.repeat(known, np.diff(seen.indptr))
                ranking[torch.from_numpy(b_idx), torch.from_numpy(seen.indices[keep].astype(np.int64))] = (
                    float("-inf")
                )
        n_items = len(self.catalog)
        k_eff = min(k, n_items)
        do_explore = cfg.explore_epsilon > 0 if explore is None else explore
        pool = 20 if do_explore else 0
        m = min(n_items, max(k_eff + pool, cfg.mmr_candidates if diversity > 0 else 0))
        rel_t, cand_t = torch.topk(ranking, m, dim=1)
        cand = cand_t.numpy()
        if diversity > 0:
            top = mmr_rerank(cand, rel_t.numpy(), self.content_unit_, k_eff, diversity)
        else:
            top = cand[:, :k_eff].copy()
        exp = np.zeros(len(rows), dtype=bool)
        if do_explore and m > k_eff:
            exp = self._explore_mask(user_ids, rows) & ~cold
            if exp.any():
                tail = cand[exp, k_eff:]
                pick = (
                    np.array(
                        [
                            int.from_bytes(
                                hashlib.blake2b(f"x{cfg.seed}|{u}".encode(), digest_size=4).digest(), "big"
                            )
                            for u in np.asarray(user_ids, dtype=object)[exp]
                        ]
                    )
                    % tail.shape[1]
                )
                top[exp, -1] = tail[np.arange(len(tail)), pick]
        top_t = torch.from_numpy(top)
        rank_vals = ranking.gather(1, top_t)
        valid = torch.isfinite(rank_vals).numpy()
        fused = rank_vals.double().numpy() + fz.offset[:, None]
        if cold_block is not None:
            cold_vals = cold_block.gather(1, top_t[cold_rows]).double().numpy()
            fused[cold_rows] = cold_vals + fz.offset[cold_rows, None]
        scores = self._calibrate(fused.astype(np.float32))
        parts = fz.parts_at(top) if detail else {}
        top = np.where(valid, top, -1)
        return top, scores, cold, exp, parts

    def recommend_batch(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        *,
        exclude_watched: bool = True,
        diversity: float = 0.0,
        context: Context | None = None,
        use_adapter: bool = True,
        explore: bool | None = None,
    ) -> pd.DataFrame:
        """Top-k for many users at once: a frame with ``user_id, rank, content_id, score``.

        Scoring is vectorized over users in chunks of up to 1,024, spread over
        ``config.batch_workers`` threads (numpy, scipy and torch release the
        GIL in the heavy parts); unknown users get the cold-start list.
        ``explore=None`` follows ``config.explore_epsilon``. Ranks start at 1.
        Fewer than k rows appear only when a user has watched nearly the whole catalog.
        """
        self._require_fitted()
        k = _check_k(k)
        diversity = _check_diversity(diversity)
        ids = [
            str(u) for u in (user_ids.tolist() if isinstance(user_ids, np.ndarray | pd.Series) else user_ids)
        ]
        n_items = len(self.catalog)
        workers = self._batch_workers(len(ids))
        size = min(_CHUNK, -(-len(ids) // max(workers, 1))) if ids else 1
        chunks = [ids[lo : lo + size] for lo in range(0, len(ids), size)]
        local = threading.local()

        def run(chunk: list[str]) -> pd.DataFrame:
            scratch = getattr(local, "scratch", None)
            if scratch is None:  # one reusable block per worker thread, not one per chunk
                scratch = local.scratch = torch.empty((size, n_items), dtype=torch.float32)
            top, scores, *_ = self._rank(
                chunk,
                k,
                exclude_watched=exclude_watched,
                diversity=diversity,
                context=context,
                use_adapter=use_adapter,
                explore=explore,
                out=scratch,
            )
            kk = top.shape[1]
            ok = (top >= 0).ravel()
            return pd.DataFrame(
                {
                    "user_id": np.repeat(np.array(chunk, dtype=object), kk)[ok],
                    "rank": np.tile(np.arange(1, kk + 1), len(chunk))[ok],
                    "content_id": self.catalog.ids[np.maximum(top, 0).ravel()][ok],
                    "score": scores.ravel()[ok].astype(np.float64),
                }
            )

        if workers > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(min(workers, len(chunks)), thread_name_prefix="sona-batch") as pool:
                frames = list(pool.map(run, chunks))
        else:
            frames = [run(c) for c in chunks]
        if not frames:
            return pd.DataFrame({"user_id": [], "rank": [], "content_id": [], "score": []}).astype(
                {"user_id": object, "rank": np.int64, "content_id": object, "score": np.float64}
            )
        return pd.concat(frames, ignore_index=True)

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        exclude_watched: bool = True,
        diversity: float = 0.0,
        context: Context | None = None,
        use_adapter: bool = True,
        explore: bool | None = None,
    ) -> list[Recommendation]:
        """Top-k :class:`Recommendation` for one user, each with its source and an explanation.

        Parameters
        ----------
        exclude_watched
            Leave out titles the user has any event for.
        diversity
            MMR lambda in [0, 1]; 0 is pure relevance order.
        context
            Optional ``time_of_day`` (night/morning/afternoon/evening),
            ``device_type`` (tv/desktop/tablet/mobile) and ``mood``.
        use_adapter
            Use the user's LoRA adapter when one is attached (``adapters_``).

        Raises
        ------
        NotFittedError, ValidationError (bad ``k``, ``diversity`` or context)
        """
        self._require_fitted()
        k = _check_k(k)
        diversity = _check_diversity(diversity)
        uid = str(user_id)
        top, scores, cold, exp, parts = self._rank(
            [uid],
            k,
            exclude_watched=exclude_watched,
            diversity=diversity,
            context=context,
            use_adapter=use_adapter,
            explore=explore,
            detail=True,
        )
        ok = top[0] >= 0
        items = top[0][ok]
        sc = scores[0][ok]
        if cold[0]:
            return [self._cold_rec(int(i), float(s)) for i, s in zip(items, sc, strict=True)]
        names = [n for n in parts if n not in ("adapter_delta", "context")]
        contrib = np.stack([parts[n][0][ok] for n in names])  # (sources, k)
        best = [names[j] for j in np.argmax(contrib, axis=0)]
        if exp[0] and len(best):
            best[-1] = "explore"
        based = self._because(uid, items, best)
        return [  # builds result objects, no math
            self._rec(int(i), float(s), src, b) for i, s, src, b in zip(items, sc, best, based, strict=True)
        ]

    def _cold_rec(self, item: int, score: float) -> Recommendation:
        it = self.catalog.item_at(item)
        genre = it.genres[0] if it.genres else "the catalog"
        return Recommendation(
            content_id=ContentId(it.content_id),
            score=score,
            recommendation_type="cold_start",
            explanation=f"Popular in {genre}",
        )

    def _because(
        self, uid: str, items: npt.NDArray[np.int64], sources: Sequence[str]
    ) -> list[tuple[ContentId, ...]]:
        """For each item, up to three of the user's titles that most support it under its source."""
        out: list[tuple[ContentId, ...]] = [() for _ in sources]
        w = self.state_.weights[self.user_index_[uid]]
        hist, wv = w.indices, w.data
        if len(hist) == 0 or len(items) == 0:
            return out
        items = np.asarray(items, dtype=np.int64)
        content = (self.content_unit_[hist] @ self.content_unit_[items].T) * wv[:, None]  # (hist, k)
        sims = {"content": content}
        for name, mat in (("collaborative", self.collab_), ("graph", self.graph_)):
            if mat is not None and name in sources:
                sub = mat[hist][:, items]
                sims[name] = (sub.toarray() if sp.issparse(sub) else np.asarray(sub)) * wv[:, None]
        for j, src in enumerate(sources):
            if src in ("popularity", "trending", "explore"):
                continue
            support = sims.get(src, content)[:, j]
            order = np.argsort(-support, kind="stable")[:3]
            order = order[support[order] > 0]
            out[j] = tuple(ContentId(str(c)) for c in self.catalog.ids[hist[order]])
        return out

    def _rec(self, item: int, score: float, source: str, based: tuple[ContentId, ...]) -> Recommendation:
        types: dict[str, RecommendationType] = {
            "collaborative": "collaborative",
            "tower": "personalized",
            "content": "content",
            "graph": "graph",
            "genre_affinity": "content",
            "popularity": "popular",
            "trending": "trending",
            "explore": "explore",
        }
        rtype = types.get(source, "personalized")
        it = self.catalog.item_at(item)
        if rtype == "explore":
            text = f"Something different: {it.title}"
        elif rtype in ("popular", "trending"):
            text = f"{'Trending' if rtype == 'trending' else 'Popular'} right now"
        elif based:
            names = [self.catalog[c].title for c in based[:2]]
            text = "Because you watched " + " and ".join(names)
        elif rtype == "content" and it.genres:
            text = f"Matches your taste for {it.genres[0]}"
        else:
            text = "Picked for you"
        return Recommendation(
            content_id=ContentId(it.content_id),
            score=score,
            recommendation_type=rtype,
            based_on=based,
            explanation=text,
        )

    # --------------------------------------------------------------- misc
    def reweighted(self, **weights: float) -> Sona:
        """A copy sharing this fitted state with other fusion weights (``w_*`` fields only).

        Fusion happens at ranking time, so tuning weights needs no refit.
        """
        self._require_fitted()
        bad = [n for n in weights if not n.startswith("w_")]
        if bad:
            raise ConfigError(f"reweighted() only changes w_* fusion weights, got {bad}")
        clone = object.__new__(Sona)
        clone.__dict__.update(self.__dict__)
        clone.config = replace(self.config, **weights)
        return clone

    def train_adapters(self, user_ids: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Train per-user LoRA adapters: forwards to ``sona.lora.train_adapters(self, user_ids, ...)``."""
        self._require_fitted()
        try:
            from sona import lora
        except ImportError as exc:  # pragma: no cover - lora ships with sona
            raise ConfigError("sona.lora is not available in this installation") from exc
        train = getattr(lora, "train_adapters", None)
        if train is None:
            raise ConfigError("sona.lora.train_adapters is not available yet in this build")
        return train(self, user_ids, **kwargs)

    def __repr__(self) -> str:
        fitted = f", n_users={len(self.user_index_)}" if hasattr(self, "state_") else ", not fitted"
        return f"Sona(n_items={len(self.catalog)}{fitted})"

    # ------------------------------------------------------------ persist
    def save(self, directory: str | Path) -> Path:
        """Write the fitted engine to ``directory`` atomically (a complete copy or nothing).

        Holds the config, catalog, event history, content embeddings,
        item-item weights and the tower's weights; profiles are recomputed on
        load from the history, deterministically. Adapters are stored by ``sona.lora``.
        """
        self._require_fitted()
        target = Path(directory).expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            self._write(tmp)
            old = None
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StorageError(f"could not save engine to {target}: {exc}") from exc
        return target

    def _write(self, d: Path) -> None:
        h = self.history_
        ts = h["timestamp"].astype("int64").to_numpy()
        np.savez(
            d / "history.npz",
            **{c: h[c].to_numpy(dtype=str) for c in ("event_id", "user_id", "content_id", "source")},
            timestamp_ns=ts,
            **{
                c: h[c].to_numpy()
                for c in ("completion_rate", "watch_seconds", "rating", "dismissed", "is_rewatch")
            },
        )
        arrays: dict[str, npt.NDArray[Any]] = {
            "content_embeddings": self.content_embeddings_,
            "popularity": self.popularity_,
            "trending": self.trending_,
            "cold_order": self.cold_order_,
            "cold_rank": self.cold_rank_,
        }
        if sp.issparse(self.collab_):
            c = self.collab_.tocsr()
            arrays.update(collab_data=c.data, collab_indices=c.indices, collab_indptr=c.indptr)
        else:
            arrays["collab_dense"] = np.asarray(self.collab_)
        np.savez(d / "model.npz", **arrays)
        torch.save(self.scorer_.state_dict(), d / "scorer.pt")
        tower = self.scorer_.tower
        meta = {
            "format_version": _FORMAT_VERSION,
            "config": asdict(self.config),
            "tower": {
                "in_dim": tower.fc1.in_features,
                "hidden_dim": tower.fc1.out_features,
                "out_dim": tower.fc2.out_features,
            },
            "users": [str(u) for u in self.users_],
        }
        (d / "engine.json").write_text(json.dumps(meta))
        cat = self.catalog.to_frame().drop(columns=[], errors="ignore")
        (d / "catalog.json").write_text(cat.to_json(orient="records"))
        for f in d.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())

    @classmethod
    def load(cls, directory: str | Path) -> Sona:
        """Load an engine written by :meth:`save`; scores are identical to the saved engine's.

        Raises
        ------
        StorageError
            The directory is missing, incomplete or from an incompatible version.
        """
        d = Path(directory).expanduser()
        try:
            meta = json.loads((d / "engine.json").read_text())
            if meta.get("format_version") != _FORMAT_VERSION:
                raise StorageError(f"{d}: unsupported engine format {meta.get('format_version')!r}")
            catalog = Catalog.from_frame(pd.read_json(d / "catalog.json", orient="records", dtype=False))
            hist = np.load(d / "history.npz", allow_pickle=False)
            model = np.load(d / "model.npz", allow_pickle=False)
            state = torch.load(d / "scorer.pt", weights_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise StorageError(f"cannot load a Sona engine from {d}: {exc}") from exc
        engine = cls(catalog, SonaConfig(**meta["config"]))
        frame = pd.DataFrame(
            {c: hist[c].astype(object) for c in ("event_id", "user_id", "content_id", "source")}
        )
        frame["timestamp"] = pd.to_datetime(hist["timestamp_ns"], unit="ns", utc=True)
        for c in ("completion_rate", "watch_seconds", "rating", "dismissed", "is_rewatch"):
            frame[c] = hist[c]
        frame = frame[list(EVENT_COLUMNS)]
        users = np.array(meta["users"], dtype=object)
        engine.users_ = users
        engine.user_index_ = {u: i for i, u in enumerate(users)}
        engine.history_ = frame
        engine.genre_matrix_ = catalog.genre_matrix().astype(np.float32).tocsr()
        gsum = np.asarray(engine.genre_matrix_.sum(axis=1)).ravel()
        engine.genre_mean_matrix_ = (sp.diags(1.0 / np.maximum(gsum, 1.0)) @ engine.genre_matrix_).tocsr()
        engine.years_ = catalog.years()
        engine.durations_ = np.array(
            [np.nan if it.duration_seconds is None else it.duration_seconds for it in catalog],
            dtype=np.float32,
        )
        engine.content_embeddings_ = model["content_embeddings"]
        t = meta["tower"]
        scorer = TowerScorer(
            UserTower(t["in_dim"], t["hidden_dim"], t["out_dim"]), len(catalog), t["out_dim"]
        )
        scorer.load_state_dict(state)
        scorer.eval()
        for p in scorer.parameters():
            p.requires_grad_(False)
        engine.scorer_ = scorer
        ev = engine._arrays(
            frame,
            pd.Index(users).get_indexer(frame["user_id"]),
            catalog.index_of(frame["content_id"].to_numpy()),
        )
        engine.state_ = engine._profiles(ev, len(users), engine.content_embeddings_)
        engine._set_item_state_loaded(model)
        return engine

    def _set_item_state_loaded(self, model: Any) -> None:
        n_items = len(self.catalog)
        self.content_unit_ = l2_normalize(self.content_embeddings_)
        if "collab_dense" in model:
            self.collab_ = model["collab_dense"]
        else:
            self.collab_ = sp.csr_matrix(
                (model["collab_data"], model["collab_indices"], model["collab_indptr"]),
                shape=(n_items, n_items),
            )
        self.graph_ = people_similarity(self.catalog, min_count=self.config.people_min_count)
        self.popularity_ = model["popularity"]
        self.trending_ = model["trending"]
        self.cold_order_ = model["cold_order"]
        self.cold_rank_ = model["cold_rank"]
