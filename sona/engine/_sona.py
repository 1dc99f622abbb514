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

Structure. ``Sona`` is the notebook facade over three parts: the frozen
:class:`~sona.engine._model.FittedModel` (``model_``, what ``fit`` learned and
``save`` writes, named by ``model_id_``), the per-user state behind the
:class:`~sona.engine._user_state.UserState` protocol (in memory here), and
ranking as plain functions of the two plus the request and the attached adapters
(:mod:`sona.engine._ranking`).

LoRA hooks (``sona.lora`` builds on these through its ``AdaptableEngine``
protocol; nothing here imports it eagerly, and it never sets engine attributes):

- ``attach(adapters)`` / ``detach()``; ``adapters_`` is the set attached (None
  by default). When set and ``use_adapter`` is true, the tower logits of a batch
  come from ``adapters.tower_logits(user_ids, x, scorer_)`` instead of
  ``scorer_(x)``, and ``score_components`` reports the difference as
  ``adapter_delta``. A set that also has ``resident_embeddings(user_ids, x) ->
  (rows, embeddings)`` is asked only for the rows of users with an adapter (the
  fast path). ``forget_adapters(user_ids)`` drops resident ones (a newer version
  was stored elsewhere).
- ``scorer_``: the :class:`~sona.models.TowerScorer`; its tower's ``fc1`` and
  ``fc2`` are the adapter targets. ``model_id_`` names the model adapters belong to.
- ``tower_inputs(user_ids, context)``: the exact (batch, in_dim) tensor the
  tower sees for those users, from their current profiles.
- ``training_view(events, user_ids)``: the same tower inputs and the fused
  score of every other source, for profiles built from only ``events`` (an
  older part of each user's history), as a :class:`~sona.models.TrainingView`.
- ``user_history(user_id)``, ``user_events(user_ids)`` and ``interactions(user_ids)``:
  the events and the engagement-weight rows adapters train on; ``item_index(content_ids)`` maps ids.
- ``train_adapters(user_ids, **kwargs)`` forwards to ``sona.lora.train_adapters``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
import torch

from sona.catalog import Catalog
from sona.engine._batching import ranked_frame, run_chunked, workers_for
from sona.engine._explain import because, cold_recommendation, explained, top_sources
from sona.engine._fit import fit_model, load_model, saved_engine
from sona.engine._model import FittedModel, learned
from sona.engine._persist import write_engine
from sona.engine._profile_rows import tower_input_rows, user_profiles
from sona.engine._ranking import (
    AttachedAdapters,
    RankRequest,
    TowerAdapters,
    components,
    csr_rows,
    rank,
    training_view,
)
from sona.engine._requests import (
    Context,
    OnConflict,
    as_frame,
    check_content_ids,
    check_context,
    check_diversity,
    check_k,
    check_titles,
    check_user_id,
    check_user_ids,
)
from sona.engine._user_state import UserState
from sona.errors import ConfigError, NotFittedError, UnknownUserError
from sona.events import ViewingEvent
from sona.features import ProfileState
from sona.models import PlattScaling, TrainingView
from sona.models._config import CollaborativeKind, SonaConfig
from sona.models._recommendation import Recommendation
from sona.profile import UserProfile

__all__ = ["Context", "OnConflict", "Recommendation", "Sona", "SonaConfig"]

#: The config fields ``reweighted`` may change.
_WEIGHT_FIELDS = frozenset(f.name for f in fields(SonaConfig) if f.name.startswith("w_"))
_Items = npt.NDArray[np.float32] | sp.csr_matrix


def _request(
    k: int,
    exclude_watched: bool,
    diversity: float,
    context: Context | None,
    explore: bool | None,
    *,
    detail: bool = False,
) -> RankRequest:
    """The checked :class:`RankRequest` of a ``recommend``/``recommend_batch`` call."""
    return RankRequest(
        k=check_k(k),
        exclude_watched=exclude_watched,
        diversity=check_diversity(diversity),
        context=check_context(context),
        explore=explore,
        detail=detail,
    )


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
    item-item weights) once, as a frozen ``model_``. ``observe`` only recomputes
    the touched users' profile rows, so new users are served without retraining.
    See the module docstring for the fusion and the LoRA hooks.
    """

    # Learned attributes: read from the fitted model, absent before ``fit``.
    scorer_ = learned(lambda m: m.scorer)
    content_embeddings_ = learned(lambda m: m.content_embeddings)
    calibration_: learned[PlattScaling | None] = learned(lambda m: m.calibration)
    model_id_ = learned(lambda m: m.model_id)
    transitions_ = learned(lambda m: m.transitions)
    genre_matrix_ = learned(lambda m: m.tables.genre_matrix)
    genre_mean_matrix_ = learned(lambda m: m.tables.genre_mean_matrix)
    years_ = learned(lambda m: m.tables.years)
    durations_ = learned(lambda m: m.tables.durations)
    content_unit_ = learned(lambda m: m.items.content_unit)
    collab_: learned[_Items] = learned(lambda m: m.items.collab)
    collab_kind_: learned[CollaborativeKind] = learned(lambda m: m.items.collab_kind)
    graph_: learned[sp.csr_matrix | None] = learned(lambda m: m.items.graph)
    popularity_ = learned(lambda m: m.items.popularity)
    trending_ = learned(lambda m: m.items.trending)
    cold_order_ = learned(lambda m: m.items.cold_order)
    cold_rank_ = learned(lambda m: m.items.cold_rank)

    def __init__(self, catalog: Catalog, config: SonaConfig | None = None) -> None:
        if not isinstance(catalog, Catalog):
            raise ConfigError("catalog must be a sona.Catalog")
        if config is not None and not isinstance(config, SonaConfig):
            raise ConfigError("config must be a sona.SonaConfig")
        self.catalog = catalog
        self._config = config or SonaConfig()
        self._model: FittedModel | None = None
        self._users: UserState | None = None
        self._attached: AttachedAdapters | None = None

    # ---------------------------------------------------------- fitted parts
    @property
    def config(self) -> SonaConfig:
        """The hyperparameters; after ``fit`` also the fitted model's (set both at once)."""
        return self._config

    @config.setter
    def config(self, config: SonaConfig) -> None:
        if not isinstance(config, SonaConfig):
            raise ConfigError("config must be a sona.SonaConfig")
        self._config = config
        if self._model is not None:
            self._model = self._model.with_config(config)
        if self._users is not None:
            self._users = self._users.copy(self._model)

    @property
    def model_(self) -> FittedModel:
        """The frozen fitted model (what ``save`` writes besides the event history)."""
        return self._fitted()

    @property
    def user_state_(self) -> UserState:
        """The per-user state ranking reads (in memory: the event log and profile rows)."""
        return self._state()

    @property
    def users_(self) -> npt.NDArray[np.object_]:
        """Every user with events seen by ``fit``/``observe``, in profile-row order."""
        return self._state().users()

    @property
    def user_index_(self) -> Mapping[str, int]:
        """User id → profile row."""
        return self._state().index()

    @property
    def history_(self) -> pd.DataFrame:
        """Every event seen by ``fit``/``observe``, sorted by user then time.

        Assembled lazily: ``observe`` appends in time proportional to the new
        events, and the first read afterwards merges them (O(all events) once).
        """
        return self._state().history()

    @property
    def state_(self) -> ProfileState:
        """Every user's profile rows (row order of ``users_``)."""
        return self._state().rows(()).profiles

    @property
    def adapters_(self) -> Any:
        """The adapter set attached with :meth:`attach` (None: the base model serves)."""
        return None if self._attached is None else self._attached.adapters

    @adapters_.setter
    def adapters_(self, adapters: Any) -> None:
        self.attach(adapters)

    def _fitted(self) -> FittedModel:
        if self._model is None:
            raise AttributeError("model_")  # not fitted: hasattr(engine, "model_") is False
        return self._model

    def _state(self) -> UserState:
        if self._users is None:
            raise AttributeError("users_")
        return self._users

    def _require_fitted(self) -> tuple[FittedModel, UserState]:
        if self._model is None or self._users is None:
            raise NotFittedError("this Sona engine is not fitted yet; call fit(events) first")
        return self._model, self._users

    def _clone(self, model: FittedModel | None = None) -> Sona:
        """A copy sharing the model and the adapters, with its own (copied) user state."""
        clone = object.__new__(Sona)
        clone.__dict__.update(self.__dict__)
        if model is not None:
            clone._model = model
            clone._config = model.config
        if self._users is not None:
            clone._users = self._users.copy(clone._model)
        return clone

    # ------------------------------------------------------------------ fit
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
        frame = as_frame(events, allow_empty=False)
        check_titles(self.catalog, frame)
        # Adapters belong to the model they were trained on: a new fit leaves none attached.
        self.detach()
        # One row per event_id, the first one given, as the event log assumes (``observe`` then
        # works) and as storage keeps it (``add_events`` ignores a repeated id).
        frame = frame.drop_duplicates("event_id", keep="first")
        frame = frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
        checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir) / "base_model.ckpt"
        self._model, self._users = fit_model(self.catalog, self.config, frame, checkpoint=checkpoint)
        return self

    # -------------------------------------------------------------- users
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
        _, users = self._require_fitted()
        if on_conflict not in ("ignore", "max_progress"):
            raise ConfigError(f"on_conflict must be 'ignore' or 'max_progress', got {on_conflict!r}")
        frame = as_frame(events, allow_empty=True)
        if len(frame) == 0:
            return self
        check_titles(self.catalog, frame)
        users.observe(frame, on_conflict)
        return self

    def observed(
        self, events: pd.DataFrame | Sequence[ViewingEvent], *, on_conflict: OnConflict = "ignore"
    ) -> Sona:
        """A new engine that has also seen ``events``; this one is left exactly as it was.

        For writers that must not change what is served before their write is
        durable: build the profile to store on the copy, commit, then ``observe``.
        The copy shares the model and the adapters; its user state is its own.
        Same errors as ``observe``.
        """
        self._require_fitted()
        return self._clone().observe(events, on_conflict=on_conflict)

    def forget_users(self, user_ids: Sequence[str]) -> None:
        """Drop what this process learned about these users since ``fit``/``load``.

        Users the model was fitted with get their fitted profile and events back;
        users it never saw become unknown again (cold start). A service calls this
        to bound the users it keeps in memory; their current state is read back
        from the shared store (and observed) on their next request.

        Raises
        ------
        NotFittedError, ValidationError (``user_ids`` not a sequence of ids)
        """
        _, users = self._require_fitted()
        users.forget(check_user_ids(user_ids))

    def known_user(self, user_id: str) -> bool:
        """True when ``user_id`` has any event seen by ``fit`` or ``observe``."""
        _, users = self._require_fitted()
        return str(user_id) in users.index()

    def item_index(self, content_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Catalog positions of ``content_ids`` (columns of score arrays); unknown ids raise."""
        return self.catalog.index_of(list(content_ids))

    def user_history(self, user_id: str) -> pd.DataFrame:
        """Events of ``user_id`` seen by ``fit``/``observe``, oldest first (empty for unknown users)."""
        _, users = self._require_fitted()
        return users.events_of([str(user_id)])

    def user_events(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """Events of several users, sorted by user then time (what adapters train on)."""
        _, users = self._require_fitted()
        return users.events_of([str(u) for u in user_ids])

    def interactions(self, user_ids: Sequence[str]) -> sp.csr_matrix:
        """(len(user_ids), n_items) engagement x decay rows; all-zero rows for unknown users."""
        _, users = self._require_fitted()
        view = users.rows(user_ids)
        out = view.profiles.weights[np.maximum(view.rows, 0)].tocsr()
        return (sp.diags(view.known.astype(np.float32)) @ out).tocsr()

    def profile(self, user_id: str) -> UserProfile:
        """The user's current profile. Unknown users raise :class:`~sona.errors.UnknownUserError`."""
        return self.profiles([user_id])[0]

    def profiles(self, user_ids: Sequence[str]) -> list[UserProfile]:
        """Profiles of several users; unknown users raise :class:`~sona.errors.UnknownUserError`."""
        _, users = self._require_fitted()
        view = users.rows(list(user_ids))
        if not view.known.all():
            raise UnknownUserError(str(list(user_ids)[int(np.flatnonzero(~view.known)[0])]))
        return user_profiles(view.profiles, view.rows, view.user_ids, self.catalog.genres)

    # ------------------------------------------------------------- adapters
    def attach(self, adapters: TowerAdapters | None) -> None:
        """Serve with this adapter set from now on (None detaches).

        The set must belong to this model: one that records another ``model_id``
        raises :class:`~sona.errors.ConfigError`.
        """
        if adapters is None:
            self._attached = None
            return
        theirs = getattr(adapters, "model_id", None)
        ours = self._model.model_id if self._model is not None else None
        if theirs and ours and theirs != ours:
            raise ConfigError(f"these adapters belong to model {theirs}, this engine serves {ours}")
        self._attached = AttachedAdapters(adapters, threading.Lock())

    def detach(self) -> None:
        """Serve the base model only (the attached adapter set, if any, is dropped)."""
        self._attached = None

    def forget_adapters(self, user_ids: Sequence[str]) -> None:
        """Drop these users' resident adapters (a new version was stored elsewhere): the next request
        reads the store again. Takes the lock adapter look-ups run under."""
        attached = self._attached
        invalidate = getattr(attached.adapters, "invalidate", None) if attached is not None else None
        if attached is None or invalidate is None:
            return
        with attached.lock:
            invalidate(user_ids)

    _forget_adapters = forget_adapters  # the application side's older name

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

    def _adapters(self, use_adapter: bool) -> AttachedAdapters | None:
        return self._attached if use_adapter else None

    # ------------------------------------------------------------- scoring
    def tower_inputs(self, user_ids: Sequence[str], context: Context | None = None) -> torch.Tensor:
        """(batch, in_dim) tower input: preference vector, day-part shares, recency bias.

        A ``context['time_of_day']`` replaces the day-part shares by a one-hot;
        unknown users get a zero preference vector and uniform day parts.
        """
        _, users = self._require_fitted()
        view = users.rows(list(user_ids))
        return torch.from_numpy(tower_input_rows(view.profiles, view.rows, context))

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
        model, _ = self._require_fitted()
        return training_view(model, events, user_ids, fixed=fixed)

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
        model, users = self._require_fitted()
        uid = check_user_id(user_id)
        context = check_context(context)
        cols = self.catalog.index_of(check_content_ids(content_ids))
        view = users.rows([uid], events=bool(model.config.w_sequential))
        return components(model, view, cols, context, self._adapters(use_adapter))

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
        model, users = self._require_fitted()
        request = _request(k, exclude_watched, diversity, context, explore)
        ids = check_user_ids(user_ids)
        adapters = self._adapters(use_adapter)
        events = bool(model.config.w_sequential)

        def rank_chunk(chunk: list[str], scratch: torch.Tensor) -> pd.DataFrame:
            ranked = rank(model, users.rows(chunk, events=events), request, adapters, out=scratch)
            return ranked_frame(chunk, ranked.top, ranked.scores, self.catalog.ids)

        workers = workers_for(len(ids), self.config.batch_workers)
        return run_chunked(ids, len(self.catalog), workers, rank_chunk)

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
            Use the user's LoRA adapter when one is attached (:meth:`attach`).

        Raises
        ------
        NotFittedError, ValidationError (bad ``user_id``, ``k``, ``diversity`` or ``context``)
        """
        model, users = self._require_fitted()
        request = _request(k, exclude_watched, diversity, context, explore, detail=True)
        uid = check_user_id(user_id)
        view = users.rows([uid], events=bool(model.config.w_sequential))
        top, scores, cold, exp, parts = rank(model, view, request, self._adapters(use_adapter))
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
            csr_rows(view.profiles.weights, view.rows),
            items,
            best,
            content_unit=model.items.content_unit,
            item_item={"collaborative": model.items.collab, "graph": model.items.graph},
        )
        return explained(self.catalog, items, sc, best, based)

    # --------------------------------------------------------------- misc
    def reweighted(self, **weights: float) -> Sona:
        """A copy sharing this fitted state with other fusion weights (``w_*`` fields only).

        Fusion happens at ranking time, so tuning weights needs no refit. The copy
        keeps the model id (the learned weights are the same) and the adapters.

        Raises
        ------
        NotFittedError, ConfigError (an unknown weight name or a value that is not a finite number)
        """
        model, _ = self._require_fitted()
        bad = sorted(set(weights) - _WEIGHT_FIELDS)
        if bad:
            raise ConfigError(
                f"reweighted() only changes the fusion weights {sorted(_WEIGHT_FIELDS)}, got {bad}"
            )
        return self._clone(model.with_config(replace(self.config, **weights)))

    def __repr__(self) -> str:
        fitted = f", n_users={len(self._users.index())}" if self._users is not None else ", not fitted"
        return f"Sona(n_items={len(self.catalog)}{fitted})"

    def save(self, directory: str | Path) -> Path:
        """Write the fitted engine to ``directory`` atomically (a complete copy or nothing).

        Holds the config, catalog, event history, content embeddings,
        item-item weights, the tower's weights, the score calibration and the
        model id; profiles are recomputed on load from the history, deterministically.
        Adapters are stored by ``sona.lora``. The format is in ``sona.engine._persist``.

        Raises
        ------
        NotFittedError, StorageError
        """
        model, users = self._require_fitted()
        return write_engine(directory, saved_engine(model, users.users(), users.history()))

    @classmethod
    def load(cls, directory: str | Path) -> Sona:
        """Load an engine written by :meth:`save`; scores are identical to the saved engine's.

        Raises
        ------
        StorageError
            The directory is missing, incomplete or from an incompatible version.
        """
        model, users = load_model(directory)
        engine = cls(model.catalog, model.config)
        engine._model, engine._users = model, users
        return engine
