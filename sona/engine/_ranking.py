"""Ranking as plain functions of (model, user rows, request, adapters): no engine state.

Why functions: a served answer must depend only on the frozen model, a
consistent snapshot of the user's state (:class:`~sona.engine._user_state.UserRows`)
and the adapters attached, so that any process holding the same three gives the
same list. ``Sona.recommend``/``recommend_batch``/``score`` check arguments and
call these; ``training_view`` builds the same fused inputs for profiles made of
chosen events (adapter training, calibration).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
import torch

from sona.engine._fit_state import event_arrays, qualifying
from sona.engine._model import FittedModel
from sona.engine._profile_rows import tower_input_rows
from sona.engine._requests import Context, check_titles
from sona.engine._user_state import UserRows
from sona.errors import DataError
from sona.features import context_item_scores, side_features
from sona.models import (
    FusedBatch,
    FusionWeights,
    TrainingView,
    explore_mask,
    explore_picks,
    mask_rows,
    select_top,
)
from sona.models._calibration import sigmoid
from sona.models._config import SonaConfig
from sona.models._tower import TowerScorer
from sona.models._transitions import recent_rows

__all__ = [
    "AttachedAdapters",
    "RankRequest",
    "Ranked",
    "TowerAdapters",
    "calibrated",
    "components",
    "csr_rows",
    "fuse",
    "rank",
    "training_view",
]

_VIEW_COLUMNS = ("completion_rate", "rating", "dismissed")
#: Weights of the sources the uncalibrated squash normalizes the fused score by.
_SQUASH_WEIGHTS = ("w_collaborative", "w_tower", "w_content", "w_graph", "w_genre", "w_popularity")
_BASE_SOURCES = ("collaborative", "tower", "content", "graph", "popularity", "trending")


class TowerAdapters(Protocol):
    """The documented adapter hook: adapted tower logits of a batch (``sona.lora.UserAdapter`` has it).

    A set that also has ``resident_embeddings(user_ids, x) -> (rows, embeddings)`` is asked
    only for the rows of users with an adapter (the fast path).
    """

    def tower_logits(self, user_ids: Sequence[str], x: torch.Tensor, scorer: TowerScorer) -> torch.Tensor: ...


@dataclass(frozen=True, slots=True)
class AttachedAdapters:
    """An adapter set and the lock its look-ups run under (sets load lazily; batch threads take turns)."""

    adapters: Any
    lock: threading.Lock


@dataclass(frozen=True, slots=True)
class RankRequest:
    """What one ranking call asks for (checked by the facade)."""

    k: int
    exclude_watched: bool = True
    diversity: float = 0.0
    context: Context | None = None
    explore: bool | None = None
    #: Also return the per-source parts of the top titles (explanations).
    detail: bool = False


class Ranked(NamedTuple):
    """(batch, k) title positions (-1 past the end), scores, and per-row cold / explored flags."""

    top: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    cold: npt.NDArray[np.bool_]
    explored: npt.NDArray[np.bool_]
    parts: dict[str, npt.NDArray[np.float32]]


class _Tower(NamedTuple):
    """The tower's part of a batch: base embeddings and the adapters' (see :func:`_tower`)."""

    base: npt.NDArray[np.float32] | None
    adapted_user: npt.NDArray[np.float32] | None = None
    adapted: torch.Tensor | None = None
    base_logits: torch.Tensor | None = None


def csr_rows(m: sp.csr_matrix, rows: npt.NDArray[np.int64]) -> sp.csr_matrix:
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


def fusion_weights(c: SonaConfig) -> FusionWeights:
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


def calibrated(model: FittedModel, fused: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Fused scores → [0, 1]: the fitted Platt map, or for engines without one the older squash
    (about 3 standard deviations above a user's mean → 0.5). Both are monotone."""
    if model.calibration is not None:
        return model.calibration(fused)
    cfg = model.config
    total = sum(abs(getattr(cfg, w)) for w in _SQUASH_WEIGHTS)
    return sigmoid(2.0 * (fused / max(total, 1e-6)) - 6.0)


def _recent(model: FittedModel, events: pd.DataFrame, user_ids: Sequence[str]) -> sp.csr_matrix:
    """(len(user_ids), n_items) each user's last titles in ``events``, weighted by recency."""
    cfg = model.config
    ids = np.asarray([str(u) for u in user_ids], dtype=object)
    uniq, inverse = np.unique(ids, return_inverse=True)
    pos = pd.Index(uniq, dtype=object).get_indexer(events["user_id"].astype(str))
    ev = events.loc[pos >= 0]
    arrays = event_arrays(ev, pos[pos >= 0], model.catalog.index_of(ev["content_id"].to_numpy()))
    rows = recent_rows(
        arrays.user, arrays.item, arrays.seconds, qualifying(cfg, arrays),
        (len(uniq), len(model.catalog)), last=cfg.sequence_last, decay=cfg.sequence_decay,
    )  # fmt: skip
    return rows[inverse.ravel()].tocsr()


def _base_logits(scorer: TowerScorer, emb: torch.Tensor) -> torch.Tensor:
    """``scorer(x)`` from already computed base embeddings (the same ops, so the same bits)."""
    return emb @ scorer.item_embeddings.T + scorer.item_bias


def _tower(
    model: FittedModel, user_ids: Sequence[str], x: npt.NDArray[np.float32], adapters: AttachedAdapters | None
) -> _Tower:
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
    scorer = model.scorer
    with torch.no_grad():
        base_t = scorer.user_embedding(xt)
        base = base_t.numpy()
        if adapters is None:
            return _Tower(base)
        ids = [str(u) for u in user_ids]
        resident = getattr(adapters.adapters, "resident_embeddings", None)
        if resident is None:  # any object with the documented tower_logits hook
            with adapters.lock:
                got = adapters.adapters.tower_logits(ids, xt, scorer)
            got = got.detach() if isinstance(got, torch.Tensor) else torch.from_numpy(np.asarray(got))
            return _Tower(base, adapted=got.to(torch.float32), base_logits=_base_logits(scorer, base_t))
        with adapters.lock:
            rows, emb = resident(ids, xt)
        if not len(rows):
            return _Tower(base)
        adapted = base.copy()
        adapted[rows.numpy()] = emb.detach().to(torch.float32).numpy()
        return _Tower(base, adapted_user=adapted)


def fuse(
    model: FittedModel,
    users: UserRows,
    context: Context | None,
    adapters: AttachedAdapters | None,
    *,
    detail: bool,
    out: torch.Tensor | None = None,
) -> FusedBatch:
    """Fused (batch, n_items) scores of these users; with ``detail`` also splittable by source.

    ``users.events`` must be given when the model has a sequential source (``w_sequential``).
    """
    cfg, st, rows = model.config, users.profiles, users.rows
    known = users.known
    r = np.maximum(rows, 0)
    w_rows = csr_rows(st.weights, r)
    if not known.all():
        w_rows = (sp.diags(known.astype(np.float32)) @ w_rows).tocsr()
    tower = _Tower(None)
    if cfg.w_tower or detail:
        tower = _tower(model, users.user_ids, tower_input_rows(st, rows, context), adapters)
    ctx = None
    if context:
        ctx = context_item_scores(
            context, model.tables.genre_matrix, model.catalog.genres, model.tables.durations
        )
    genre = st.genre_affinity[r]
    if not known.all():  # unknown users: no taste yet, so zero preference and uniform genres
        genre = np.where(known[:, None], genre, np.float32(1.0 / max(genre.shape[1], 1)))
    recent = None
    if cfg.w_sequential:  # the last titles come from the user's events, so observe() needs no extra state
        if users.events is None:
            raise ValueError("fuse needs the users' events when the model has a sequential source")
        recent = _recent(model, users.events, users.user_ids)
    return model.fusion_tables().fuse(
        tower_user=tower.base,
        preference=np.where(known[:, None], st.preference[r], 0.0).astype(np.float32),
        genre_affinity=genre.astype(np.float32),
        interactions=w_rows,
        weights=fusion_weights(cfg),
        adapted_user=tower.adapted_user,
        adapted=tower.adapted,
        base_logits=tower.base_logits,
        context=ctx,
        recent=recent,
        detail=detail,
        out=out,
    )


def components(
    model: FittedModel,
    users: UserRows,
    cols: npt.NDArray[np.int64],
    context: Context | None,
    adapters: AttachedAdapters | None,
) -> dict[str, npt.NDArray[np.float32]]:
    """Score of titles ``cols`` for the one user in ``users``, and its parts (``Sona.score_components``)."""
    fz = fuse(model, users, context, adapters, detail=True)
    out = {k: v[0] for k, v in fz.parts_at(cols[None, :]).items()}
    out["base_relevance"] = sum(
        (out[n] for n in _BASE_SOURCES if n in out), start=np.zeros(len(cols), np.float32)
    ).astype(np.float32)
    fused = fz.fused_at(cols[None, :])[0]
    out["fused"] = fused
    out["score"] = calibrated(model, fused)
    return out


def rank(
    model: FittedModel,
    users: UserRows,
    request: RankRequest,
    adapters: AttachedAdapters | None,
    *,
    out: torch.Tensor | None = None,
) -> Ranked:
    """Top-k titles of each user: cold users get the cold-start list, explore rows one exploration slot."""
    cfg, st, rows = model.config, users.profiles, users.rows
    known = users.known
    n_events = users.qualifying()
    cold = n_events == 0
    fz = fuse(model, users, request.context, adapters, detail=request.detail, out=out)
    ranking = fz.block  # ranks like the fused score; masked in place below
    cold_rows = np.flatnonzero(cold)
    cold_block = None
    if len(cold_rows):
        ct = torch.from_numpy(cold_rows)
        cold_block = ranking[ct].clone()
        ranking[ct] = torch.from_numpy(model.items.cold_rank)
    if request.exclude_watched and known.any():
        seen = csr_rows(st.seen, np.maximum(rows, 0))
        if not known.all():
            seen = (sp.diags(known.astype(np.float32)) @ seen).tocsr()
            seen.eliminate_zeros()
        mask_rows(ranking, seen)
    k, n_items = request.k, len(model.catalog)
    k_eff = min(k, n_items)
    do_explore = cfg.explore_epsilon > 0 if request.explore is None else request.explore
    top, cand = select_top(
        ranking,
        k,
        diversity=request.diversity,
        mmr_candidates=cfg.mmr_candidates,
        explore_pool=20 if do_explore else 0,
        item_vectors=model.items.content_unit,
    )
    exp = np.zeros(len(rows), dtype=bool)
    if do_explore and cand.shape[1] > k_eff:
        mask = explore_mask(
            users.user_ids,
            n_events,
            seed=cfg.seed,
            epsilon=cfg.explore_epsilon,
            halflife=cfg.explore_halflife,
        )
        exp = mask & ~cold
        if exp.any():
            tail = _outside(cand[exp], top[exp], n_items)
            if tail.shape[1]:
                picked_users = np.asarray(users.user_ids, dtype=object)[exp]
                pick = explore_picks(picked_users, seed=cfg.seed, width=tail.shape[1])
                top[exp, -1] = tail[np.arange(len(tail)), pick]
    top_t = torch.from_numpy(top)
    rank_vals = ranking.gather(1, top_t)
    valid = torch.isfinite(rank_vals).numpy()
    fused = rank_vals.double().numpy() + fz.offset[:, None]
    if cold_block is not None:
        cold_vals = cold_block.gather(1, top_t[cold_rows]).double().numpy()
        fused[cold_rows] = cold_vals + fz.offset[cold_rows, None]
    scores = calibrated(model, fused.astype(np.float32))
    parts = fz.parts_at(top) if request.detail else {}
    top = np.where(valid, top, -1)
    return Ranked(top, scores, cold, exp, parts)


def training_view(
    model: FittedModel, events: pd.DataFrame, user_ids: Sequence[str], *, fixed: bool = True
) -> TrainingView:
    """The served ranking's inputs for ``user_ids`` as if ``events`` were their whole history.

    See :meth:`sona.Sona.training_view`; profiles are built from exactly ``events``.
    """
    missing = sorted({"user_id", "content_id", "timestamp", *_VIEW_COLUMNS} - set(events.columns))
    if missing:
        raise DataError(f"training_view needs event columns {missing}")
    users = [str(u) for u in user_ids]
    pos = pd.Index(users, dtype=object).get_indexer(events["user_id"].astype(str))
    ev = events.loc[pos >= 0].reset_index(drop=True)
    arrays = event_arrays(ev, pos[pos >= 0], check_titles(model.catalog, ev))
    st = model.profiles(arrays, len(users))
    x = np.hstack([st.preference, side_features(st.hourly, st.recency)]).astype(np.float32)
    scores = None
    cfg = model.config
    if fixed:
        fz = model.fusion_tables().fuse(
            tower_user=None,
            preference=st.preference.astype(np.float32),
            genre_affinity=st.genre_affinity.astype(np.float32),
            interactions=st.weights,
            weights=fusion_weights(cfg),
            recent=_recent(model, ev, users) if cfg.w_sequential else None,
        )
        scores = fz.block.add_(torch.from_numpy(fz.offset.astype(np.float32))[:, None])
    return TrainingView(
        user_ids=users,
        tower_inputs=torch.from_numpy(x),
        fixed_scores=scores,
        tower_weight=float(cfg.w_tower),
    )
