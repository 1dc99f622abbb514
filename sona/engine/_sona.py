"""The Sona engine: fit the shared base model, keep user profiles current, rank titles.

Scoring. Every title is a candidate; each source gives a (users × titles)
score block and the blocks are fused linearly after per-user standardization:

=================  =========================================================
collaborative      item-item model (EASE; sparse EASE for large catalogs) applied
                   to the user's engagement x decay row: ``x_u @ B``
tower              the learned user tower on the preference vector (LoRA point)
content            cosine of the preference vector and each title's content embedding
graph              shared people (actors, directors) with the user's titles
popularity         log view counts;  trending: the same over the last days
genre              the user's Laplace-smoothed genre affinities
context            request context (mood → genres, mobile → shorter titles)
=================  =========================================================

The fused value maps to a score in [0, 1] by Platt scaling fitted in ``fit`` (monotone,
so ranks never change). Users with no qualifying events get the genre-diverse
popular list (cold start) instead.

LoRA hooks (``sona.lora`` builds on these; nothing here imports it eagerly):

- ``adapters_`` (None by default). When set and ``use_adapter`` is true, the
  tower logits of a batch come from
  ``adapters_.tower_logits(user_ids, x, scorer_)`` instead of ``scorer_(x)``,
  and ``score_components`` reports the difference as ``adapter_delta``. An
  adapter set that also has ``resident_logits(user_ids, x, scorer_) -> (rows,
  logits)`` is asked only for the rows of users with an adapter (the fast path).
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

import threading
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, NamedTuple, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
import torch

from sona.catalog import Catalog
from sona.engine._batching import ranked_frame, run_chunked, workers_for
from sona.engine._calibrate import fit_calibration, holdout_mask
from sona.engine._event_log import EventLog
from sona.engine._explain import because, cold_recommendation, explained, top_sources
from sona.engine._fit_state import (
    base_params,
    catalog_tables,
    event_arrays,
    fit_item_state,
    loaded_item_state,
    order_matrix,
)
from sona.engine._observe import progressed
from sona.engine._persist import SavedEngine, item_arrays, model_id_of, read_engine, write_engine
from sona.engine._profile_rows import merge_profile_rows, tower_input_rows, user_profiles
from sona.engine._requests import (
    Context,
    OnConflict,
    as_frame,
    check_content_ids,
    check_context,
    check_diversity,
    check_k,
    check_user_id,
    check_user_ids,
)
from sona.errors import ConfigError, DataError, NotFittedError, UnknownContentError
from sona.events import ViewingEvent
from sona.features import (
    EventArrays,
    ProfileState,
    compute_profiles,
    content_features,
    context_item_scores,
    engagement_weight,
    side_features,
)
from sona.models import (
    FusedBatch,
    FusionWeights,
    ItemTables,
    PlattScaling,
    TrainingView,
    explore_mask,
    explore_picks,
    mask_rows,
    select_top,
    train_base_model,
)
from sona.models._calibration import sigmoid
from sona.models._config import SonaConfig
from sona.models._recommendation import Recommendation
from sona.models._transitions import recent_rows, transition_weights
from sona.profile import UserProfile

__all__ = ["Context", "OnConflict", "Recommendation", "Sona", "SonaConfig"]

_Ranked = tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.float32],
    npt.NDArray[np.bool_],
    npt.NDArray[np.bool_],
    dict[str, npt.NDArray[np.float32]],
]
_CHUNK = 1024
_VIEW_COLUMNS = ("completion_rate", "rating", "dismissed")
#: The config fields ``reweighted`` may change.
_WEIGHT_FIELDS = frozenset(f.name for f in fields(SonaConfig) if f.name.startswith("w_"))
#: Weights of the sources the uncalibrated squash normalizes the fused score by.
_SQUASH_WEIGHTS = ("w_collaborative", "w_tower", "w_content", "w_graph", "w_genre", "w_popularity")


class _Tower(NamedTuple):
    """The tower's part of a batch: base embeddings and the adapters' (see ``Sona._tower``)."""

    base: npt.NDArray[np.float32] | None
    adapted_user: npt.NDArray[np.float32] | None = None
    adapted: torch.Tensor | None = None
    base_logits: torch.Tensor | None = None


def _csr_rows(m: sp.csr_matrix, rows: npt.NDArray[np.int64]) -> sp.csr_matrix:
    """``m[rows]`` for read-only use; one row is a slice, half the cost of fancy indexing per request."""
    if len(rows) == 1:
        i = int(rows[0])
        return m[i : i + 1]
    return m[rows]


def _outside(cand: npt.NDArray[np.int64], top: npt.NDArray[np.int64], n_items: int) -> npt.NDArray[np.int64]:
    """Each row's candidates that are not in its top, in candidate order (the exploration pool).

    MMR picks the top from anywhere among the candidates, so ``cand[:, k:]`` may hold top titles.
    """
    rows = np.arange(len(cand), dtype=np.int64)[:, None] * n_items
    in_top = np.isin(cand + rows, top + rows)
    width = int((~in_top).sum(axis=1).min()) if len(cand) else 0
    order = np.argsort(in_top, axis=1, kind="stable")[:, :width]
    return np.take_along_axis(cand, order, axis=1)


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

    def fit(
        self, events: pd.DataFrame | Sequence[ViewingEvent], *, checkpoint_dir: str | Path | None = None
    ) -> Self:
        """Train the shared base model on ``events``; replaces anything learned before.

        Also fits the score calibration (``calibration_``), see :meth:`score`:
        the last events of a bounded sample of users are held out of training
        and the map is fitted on how the trained model scores them.

        Parameters
        ----------
        checkpoint_dir
            Directory for a training checkpoint written after every epoch. A fit
            that was interrupted (killed, SIGINT) and is called again with the
            same events, config and directory resumes after its last finished
            epoch instead of starting over.

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
        frame = as_frame(events, allow_empty=False)
        self._item_positions(frame)
        # Adapters belong to the model they were trained on: a new fit leaves none attached.
        self.adapters_ = None
        # One row per event_id, the first one given, as the event log assumes (``observe`` then
        # works) and as storage keeps it (``add_events`` ignores a repeated id).
        frame = frame.drop_duplicates("event_id", keep="first")
        frame = frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
        items = self.catalog.index_of(frame["content_id"].to_numpy())
        self._set_users(np.array(sorted(frame["user_id"].unique()), dtype=object), frame)
        ev = event_arrays(frame, pd.Index(self.users_).get_indexer(frame["user_id"]), items)
        n_users, n_items = len(self.users_), len(self.catalog)
        tables = catalog_tables(self.catalog)
        self._adopt(tables)

        # Profiles need content embeddings; a zero table first gives the weight rows to train on.
        w_event = engagement_weight(ev.completion, ev.rating, ev.dismissed, min_completion=cfg.min_completion)
        # The calibration slice stays out of everything learned; served profiles keep it.
        held_out = holdout_mask(cfg, ev, n_users)
        learn = ev if cfg.calibration == "in_sample" else ev.take(~held_out)
        w_learn = w_event if cfg.calibration == "in_sample" else w_event[~held_out]
        tmp = self._profiles(learn, n_users, np.zeros((n_items, 1), np.float32))
        trained = train_base_model(
            tmp.weights,
            order_matrix(learn, w_learn, n_users, n_items),
            side_features(tmp.hourly, tmp.recency),
            content_features(self.catalog, people_min_count=cfg.people_min_count),
            base_params(cfg),
            checkpoint=None if checkpoint_dir is None else Path(checkpoint_dir) / "base_model.ckpt",
        )
        self.content_embeddings_ = trained.content_embeddings
        self.scorer_ = trained.scorer
        item_state = fit_item_state(
            cfg, self.catalog, tables, self.content_embeddings_, learn, w_learn, tmp.weights
        )
        self._adopt(item_state)
        self.transitions_ = self._transitions(ev)
        self.state_ = self._profiles(ev, n_users, self.content_embeddings_)
        self.calibration_: PlattScaling | None = fit_calibration(self, frame, ev, w_event, held_out)
        self.model_id_: str = model_id_of(
            catalog=self.catalog,
            config=self.config,
            content_embeddings=self.content_embeddings_,
            arrays=self._item_arrays(),
            scorer=self.scorer_,
            calibration=self.calibration_,
        )
        return self

    def _qualifying(self, ev: EventArrays) -> npt.NDArray[np.bool_]:
        cfg = self.config
        w = engagement_weight(ev.completion, ev.rating, ev.dismissed, min_completion=cfg.min_completion)
        return w > 0

    def _transitions(self, ev: EventArrays) -> sp.csr_matrix:
        """The sequential source's title-to-next-title weights, from the fitted events."""
        cfg = self.config
        return transition_weights(
            ev.user, ev.item, ev.seconds, self._qualifying(ev), len(self.catalog),
            window=cfg.sequence_window, decay=cfg.sequence_decay,
        )  # fmt: skip

    def _recent(self, events: pd.DataFrame, user_ids: Sequence[str]) -> sp.csr_matrix:
        """(len(user_ids), n_items) each user's last titles in ``events``, weighted by recency."""
        cfg = self.config
        ids = np.asarray([str(u) for u in user_ids], dtype=object)
        uniq, inverse = np.unique(ids, return_inverse=True)
        pos = pd.Index(uniq, dtype=object).get_indexer(events["user_id"].astype(str))
        ev = events.loc[pos >= 0]
        arrays = event_arrays(ev, pos[pos >= 0], self.catalog.index_of(ev["content_id"].to_numpy()))
        rows = recent_rows(
            arrays.user, arrays.item, arrays.seconds, self._qualifying(arrays),
            (len(uniq), len(self.catalog)), last=cfg.sequence_last, decay=cfg.sequence_decay,
        )  # fmt: skip
        return rows[inverse.ravel()].tocsr()

    def _adopt(self, state: Any) -> None:
        """Set each field of a state dataclass as the learned attribute ``<field>_``."""
        for f in fields(state):
            setattr(self, f"{f.name}_", getattr(state, f.name))

    def _set_users(self, users: npt.NDArray[np.object_], history: pd.DataFrame) -> None:
        self.users_ = users
        self.user_index_ = {u: i for i, u in enumerate(users)}
        self.history_ = history

    def _item_positions(self, frame: pd.DataFrame) -> npt.NDArray[np.int64]:
        pos = self.catalog.lookup(frame["content_id"])
        if (pos < 0).any():
            raise UnknownContentError(sorted(set(frame["content_id"][pos < 0].astype(str)))[:20])
        return pos

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
        frame = as_frame(events, allow_empty=True)
        if len(frame) == 0:
            return self
        self._item_positions(frame)
        log = self._log()
        replaced = 0
        if on_conflict == "max_progress":
            frame, replaced = progressed(log, frame)
        else:
            frame = log.unseen(frame)
        if len(frame) == 0:
            return self
        users, index = self.users_, self.user_index_
        new_users = sorted(set(frame["user_id"].unique()) - set(index))
        if new_users:  # copies: readers keep using the old ones until everything is published
            users = np.concatenate([users, np.array(new_users, dtype=object)])
            index = {**index, **{u: len(index) + i for i, u in enumerate(new_users)}}
        log = log.append(frame, replaced=replaced)
        touched = np.array(sorted(index[u] for u in frame["user_id"].unique()), dtype=np.int64)
        state = self._refreshed(log, users[touched], touched, len(index))
        # Publish state first: it only adds rows, so old ids stay valid in it. Readers look ids
        # up before they read the state, so an id they found always has its row.
        self.__dict__["_log_"] = log
        self.state_ = state
        self.users_ = users
        self.user_index_ = index
        return self

    def observed(
        self, events: pd.DataFrame | Sequence[ViewingEvent], *, on_conflict: OnConflict = "ignore"
    ) -> Sona:
        """A new engine that has also seen ``events``; this one is left exactly as it was.

        For writers that must not change what is served before their write is
        durable: build the profile to store on the copy, commit, then ``observe``.
        ``observe`` publishes new objects by assignment and changes none in place,
        so a shallow copy shares everything until then. Same errors as ``observe``.
        """
        self._require_fitted()
        clone = object.__new__(Sona)
        clone.__dict__.update(self.__dict__)
        return clone.observe(events, on_conflict=on_conflict)

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

    def _refreshed(
        self, log: EventLog, local_ids: npt.NDArray[np.object_], rows: npt.NDArray[np.int64], n_users: int
    ) -> ProfileState:
        """The state grown to ``n_users`` rows, rows ``rows`` (sorted; users ``local_ids``) rebuilt from
        ``log``."""
        sub = log.for_users([str(u) for u in local_ids])
        local_pos = pd.Index(local_ids).get_indexer(sub["user_id"])
        ev = event_arrays(sub, local_pos, self.catalog.index_of(sub["content_id"].to_numpy()))
        fresh = self._profiles(ev, len(rows), self.content_embeddings_)
        return merge_profile_rows(self.state_, fresh, rows, n_users)

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
        return user_profiles(self.state_, rows, [str(u) for u in user_ids], self.catalog.genres)

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
        arrays = event_arrays(ev, pos[pos >= 0], self._item_positions(ev))
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
                recent=self._recent(ev, users) if self.config.w_sequential else None,
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
        return tower_input_rows(self.state_, rows, context)

    def _tower(self, user_ids: Sequence[str], x: npt.NDArray[np.float32], use_adapter: bool) -> _Tower:
        """Base user embeddings and, with resident adapters, what the fusion needs for their rows.

        The base tower runs once per batch. Its logits are never materialized:
        the tower enters the fused score through :class:`~sona.models.ItemTables`
        (one GEMM). A :class:`~sona.lora.UserAdapter` gives the adapted embeddings
        of the rows that have an adapter (``resident_embeddings``; users without
        one are skipped), which replace the base rows in that same GEMM. Adapter
        sets with only the documented ``tower_logits`` hook give adapted logits
        instead, compared against base logits of the same embeddings.
        """
        xt = torch.from_numpy(x)
        with torch.no_grad():
            base_t = self.scorer_.user_embedding(xt)
            base = base_t.numpy()
            adapters = self.adapters_
            if not (use_adapter and adapters is not None):
                return _Tower(base)
            ids = [str(u) for u in user_ids]
            lock = self.__dict__.setdefault("_adapter_lock", threading.Lock())
            resident = getattr(adapters, "resident_embeddings", None)
            if resident is None:  # any object with the documented tower_logits hook
                with lock:  # adapter sets load lazily; batch workers take turns
                    got = adapters.tower_logits(ids, xt, self.scorer_)
                got = got.detach() if isinstance(got, torch.Tensor) else torch.from_numpy(np.asarray(got))
                return _Tower(base, adapted=got.to(torch.float32), base_logits=self._base_logits(base_t))
            with lock:
                rows, emb = resident(ids, xt)
            if not len(rows):
                return _Tower(base)
            adapted = base.copy()
            adapted[rows.numpy()] = emb.detach().to(torch.float32).numpy()
            return _Tower(base, adapted_user=adapted)

    def _base_logits(self, emb: torch.Tensor) -> torch.Tensor:
        """``scorer_(x)`` from already computed base embeddings (the same ops, so the same bits)."""
        sc = self.scorer_
        return emb @ sc.item_embeddings.T + sc.item_bias

    def _item_tables(self) -> ItemTables:
        """Item-side fusion state, rebuilt whenever a learned table it derives from was replaced or edited."""
        sc = self.scorer_
        sequential = self.__dict__.get("transitions_")
        parts = (sc, self.collab_, self.content_unit_, self.genre_mean_matrix_, self.graph_, sequential)
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
            sequential=sequential,
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
            sequential=c.w_sequential,
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
        w_rows = _csr_rows(st.weights, r)
        if not known.all():
            w_rows = (sp.diags(known.astype(np.float32)) @ w_rows).tocsr()
        tower = _Tower(None)
        if cfg.w_tower or detail:
            tower = self._tower(user_ids, self._tower_inputs_rows(rows, context), use_adapter)
        ctx = None
        if context:
            ctx = context_item_scores(context, self.genre_matrix_, self.catalog.genres, self.durations_)
        genre = st.genre_affinity[r]
        if not known.all():  # unknown users: no taste yet, so zero preference and uniform genres
            genre = np.where(known[:, None], genre, np.float32(1.0 / max(genre.shape[1], 1)))
        recent = None
        if cfg.w_sequential:  # the last titles come from the event log, so observe() needs no extra state
            recent = self._recent(self._log().for_users([str(u) for u in user_ids]), user_ids)
        return self._item_tables().fuse(
            tower_user=tower.base,
            preference=np.where(known[:, None], st.preference[r], 0.0).astype(np.float32),
            genre_affinity=genre.astype(np.float32),
            interactions=w_rows,
            weights=self._fusion_weights(),
            adapted_user=tower.adapted_user,
            adapted=tower.adapted,
            base_logits=tower.base_logits,
            context=ctx,
            recent=recent,
            detail=detail,
            out=out,
        )

    def _calibrate(self, fused: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Fused scores → [0, 1]: the fitted Platt map, or for engines without one the older squash
        (about 3 standard deviations above a user's mean → 0.5). Both are monotone."""
        calibration: PlattScaling | None = getattr(self, "calibration_", None)
        if calibration is not None:
            return calibration(fused)
        cfg = self.config
        total = sum(abs(getattr(cfg, w)) for w in _SQUASH_WEIGHTS)
        return sigmoid(2.0 * (fused / max(total, 1e-6)) - 6.0)

    def score(
        self,
        user_id: str,
        content_ids: Sequence[str],
        *,
        context: Context | None = None,
        use_adapter: bool = True,
    ) -> npt.NDArray[np.float32]:
        """Personalization score in [0, 1] of each title in ``content_ids`` for ``user_id``.

        The score is calibrated: about the probability that the title is among
        the user's next interactions (roughly the next 10% of their history).
        ``fit`` learns it by Platt scaling, ``sigmoid(a * fused + b)`` with
        ``a > 0``, on each user's last 10% of training events against
        their unseen titles, as scored by a second model fitted without them
        (``SonaConfig.calibration``); being monotone in the fused score it never
        changes a ranking. It is calibrated for the fusion weights it was fitted with
        (``reweighted`` copies keep the map). Engines saved before calibration
        existed use a fixed monotone squash instead.

        Raises
        ------
        UnknownContentError
            Naming the ids not in the catalog (a ``KeyError`` subclass).
        ValidationError
            ``user_id`` is not an id, ``content_ids`` not a sequence, ``context`` not a mapping.
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
        (their sum) and ``score`` (the calibrated
        probability ``sigmoid(a * fused + b)``, see :meth:`score`). Components
        add in fused units, not in probability.
        """
        self._require_fitted()
        uid = check_user_id(user_id)
        context = check_context(context)
        cols = self.catalog.index_of(check_content_ids(content_ids))
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
        rows = self._rows(user_ids)  # ids before state: see observe
        cfg, st = self.config, self.state_
        known = rows >= 0
        n_events = np.where(known, st.qualifying[np.maximum(rows, 0)], 0)
        cold = n_events == 0
        fz = self._fuse(user_ids, rows, context, use_adapter, detail=detail, out=out)
        ranking = fz.block  # ranks like the fused score; masked in place below
        cold_rows = np.flatnonzero(cold)
        cold_block = None
        if len(cold_rows):
            ct = torch.from_numpy(cold_rows)
            cold_block = ranking[ct].clone()
            ranking[ct] = torch.from_numpy(self.cold_rank_)
        if exclude_watched and known.any():
            seen = _csr_rows(st.seen, np.maximum(rows, 0))
            if not known.all():
                seen = (sp.diags(known.astype(np.float32)) @ seen).tocsr()
                seen.eliminate_zeros()
            mask_rows(ranking, seen)
        k_eff = min(k, len(self.catalog))
        do_explore = cfg.explore_epsilon > 0 if explore is None else explore
        top, cand = select_top(
            ranking,
            k,
            diversity=diversity,
            mmr_candidates=cfg.mmr_candidates,
            explore_pool=20 if do_explore else 0,
            item_vectors=self.content_unit_,
        )
        exp = np.zeros(len(rows), dtype=bool)
        if do_explore and cand.shape[1] > k_eff:
            mask = explore_mask(
                user_ids, n_events, seed=cfg.seed, epsilon=cfg.explore_epsilon, halflife=cfg.explore_halflife
            )
            exp = mask & ~cold
            if exp.any():
                tail = _outside(cand[exp], top[exp], len(self.catalog))
                if tail.shape[1]:
                    picked_users = np.asarray(user_ids, dtype=object)[exp]
                    pick = explore_picks(picked_users, seed=cfg.seed, width=tail.shape[1])
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

        Raises
        ------
        NotFittedError, ValidationError (``user_ids`` not a sequence of ids, e.g. one string;
        bad ``k``, ``diversity`` or ``context``)
        """
        self._require_fitted()
        k = check_k(k)
        diversity = check_diversity(diversity)
        context = check_context(context)
        ids = check_user_ids(user_ids)

        def rank(chunk: list[str], scratch: torch.Tensor) -> pd.DataFrame:
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
            return ranked_frame(chunk, top, scores, self.catalog.ids)

        workers = workers_for(len(ids), self.config.batch_workers)
        return run_chunked(ids, len(self.catalog), workers, rank)

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
        NotFittedError, ValidationError (bad ``user_id``, ``k``, ``diversity`` or ``context``)
        """
        self._require_fitted()
        k = check_k(k)
        diversity = check_diversity(diversity)
        context = check_context(context)
        uid = check_user_id(user_id)
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
            return [
                cold_recommendation(self.catalog, int(i), float(s)) for i, s in zip(items, sc, strict=True)
            ]
        best = top_sources({n: v[0][ok] for n, v in parts.items()}, explored=bool(exp[0]))
        based = because(
            self.catalog,
            _csr_rows(self.state_.weights, np.array([self.user_index_[uid]])),
            items,
            best,
            content_unit=self.content_unit_,
            item_item={"collaborative": self.collab_, "graph": self.graph_},
        )
        return explained(self.catalog, items, sc, best, based)

    # --------------------------------------------------------------- misc
    def reweighted(self, **weights: float) -> Sona:
        """A copy sharing this fitted state with other fusion weights (``w_*`` fields only).

        Fusion happens at ranking time, so tuning weights needs no refit.

        Raises
        ------
        NotFittedError, ConfigError (an unknown weight name or a value that is not a finite number)
        """
        self._require_fitted()
        bad = sorted(set(weights) - _WEIGHT_FIELDS)
        if bad:
            raise ConfigError(
                f"reweighted() only changes the fusion weights {sorted(_WEIGHT_FIELDS)}, got {bad}"
            )
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

    def _forget_adapters(self, user_ids: Sequence[str]) -> None:
        """Drop these users' resident adapters (a new version was stored elsewhere): the next request
        reads the store again. Takes the lock adapter look-ups run under."""
        adapters = self.adapters_
        invalidate = getattr(adapters, "invalidate", None)
        if invalidate is None:
            return
        with self.__dict__.setdefault("_adapter_lock", threading.Lock()):
            invalidate(user_ids)

    def __repr__(self) -> str:
        fitted = f", n_users={len(self.user_index_)}" if hasattr(self, "state_") else ", not fitted"
        return f"Sona(n_items={len(self.catalog)}{fitted})"

    def save(self, directory: str | Path) -> Path:
        """Write the fitted engine to ``directory`` atomically (a complete copy or nothing).

        Holds the config, catalog, event history, content embeddings,
        item-item weights, the tower's weights and the score calibration;
        profiles are recomputed on load from the history, deterministically.
        Adapters are stored by ``sona.lora``. The format is in ``sona._persist``.

        Raises
        ------
        NotFittedError, StorageError
        """
        self._require_fitted()
        arrays = self._item_arrays()
        saved = SavedEngine(
            catalog=self.catalog,
            config=self.config,
            history=self.history_,
            users=self.users_,
            content_embeddings=self.content_embeddings_,
            scorer=self.scorer_,
            arrays=arrays,
            calibration=getattr(self, "calibration_", None),
            model_id=getattr(self, "model_id_", None),
        )
        return write_engine(directory, saved)

    def _item_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The item tables as ``save`` writes them (and the model id hashes them)."""
        return item_arrays(
            self.collab_,
            popularity=self.popularity_,
            trending=self.trending_,
            cold_order=self.cold_order_,
            cold_rank=self.cold_rank_,
        )

    @classmethod
    def load(cls, directory: str | Path) -> Sona:
        """Load an engine written by :meth:`save`; scores are identical to the saved engine's.

        Raises
        ------
        StorageError
            The directory is missing, incomplete or from an incompatible version.
        """
        saved = read_engine(directory)
        catalog = saved.catalog
        engine = cls(catalog, saved.config)
        frame, users = saved.history, saved.users
        engine._set_users(users, frame)
        engine._adopt(catalog_tables(catalog))
        engine.content_embeddings_ = saved.content_embeddings
        engine.scorer_ = saved.scorer
        ev = event_arrays(
            frame,
            pd.Index(users).get_indexer(frame["user_id"]),
            catalog.index_of(frame["content_id"].to_numpy()),
        )
        engine.state_ = engine._profiles(ev, len(users), engine.content_embeddings_)
        engine._adopt(loaded_item_state(saved.config, catalog, saved.content_embeddings, saved.arrays))
        engine.calibration_ = saved.calibration
        engine.transitions_ = engine._transitions(ev)
        engine.model_id_ = saved.model_id or ""
        return engine
