"""State ``fit`` (and ``load``) derive from the catalog and the events, outside the trained networks.

Each builder returns a small dataclass or array that becomes part of the
:class:`~sona.engine._model.FittedModel`, so ``fit`` and ``load`` build the
same state through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from sona.catalog import Catalog
from sona.features import (
    EventArrays,
    cold_start_order,
    engagement_weight,
    l2_normalize,
    people_similarity,
    popularity_scores,
)
from sona.models import BaseModelParams, ease_weights, itemknn_weights, sparse_ease_weights
from sona.models._config import CollaborativeKind, SonaConfig
from sona.models._transitions import transition_weights

__all__ = [
    "CatalogTables",
    "ItemState",
    "base_params",
    "catalog_tables",
    "collaborative_kind",
    "event_arrays",
    "fit_item_state",
    "loaded_item_state",
    "order_matrix",
    "qualifying",
    "transitions_of",
]


@dataclass(slots=True)
class CatalogTables:
    """Catalog-only lookups: genre one-hots, genre shares per title, release years, durations."""

    genre_matrix: sp.csr_matrix  # (n_items, n_genres)
    genre_mean_matrix: sp.csr_matrix  # each row divided by its genre count
    years: npt.NDArray[Any]
    durations: npt.NDArray[np.float32]  # seconds, NaN when unknown


@dataclass(slots=True)
class ItemState:
    """Item-side learned state that is not part of the torch model."""

    content_unit: npt.NDArray[np.float32]  # L2-normalized content embeddings
    collab: npt.NDArray[np.float32] | sp.csr_matrix  # item-item weights
    collab_kind: CollaborativeKind  # which model made them: "ease", "sparse_ease" or "itemknn"
    graph: sp.csr_matrix | None  # shared-people similarity
    popularity: npt.NDArray[np.float32]
    trending: npt.NDArray[np.float32]
    cold_order: npt.NDArray[np.int64]  # cold-start list, best first
    cold_rank: npt.NDArray[np.float32]  # -position in that list, per title


def catalog_tables(catalog: Catalog) -> CatalogTables:
    genre = catalog.genre_matrix().astype(np.float32).tocsr()
    gsum = np.asarray(genre.sum(axis=1)).ravel()
    durations = [np.nan if it.duration_seconds is None else it.duration_seconds for it in catalog]
    return CatalogTables(
        genre_matrix=genre,
        genre_mean_matrix=(sp.diags(1.0 / np.maximum(gsum, 1.0)) @ genre).tocsr(),
        years=catalog.years(),
        durations=np.array(durations, dtype=np.float32),
    )


def base_params(cfg: SonaConfig) -> BaseModelParams:
    """The base model's training parameters: the config fields of the same name.

    ``threads`` comes from ``train_threads``.
    """
    shared = {f.name: getattr(cfg, f.name) for f in fields(BaseModelParams) if f.name != "threads"}
    return BaseModelParams(**shared, threads=cfg.train_threads)


def event_arrays(
    frame: pd.DataFrame, user_pos: npt.NDArray[np.int64], items: npt.NDArray[np.int64]
) -> EventArrays:
    """Column arrays of ``frame``, users and titles already mapped to positions; time in seconds."""
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


def order_matrix(
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
    return sp.csr_matrix((frac.astype(np.float32), (u, it)), shape=(n_users, n_items))


def _cold_rank(cold_order: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    rank = np.empty(len(cold_order), dtype=np.float32)
    rank[cold_order] = -np.arange(len(cold_order), dtype=np.float32)
    return rank


def collaborative_kind(cfg: SonaConfig, n_items: int) -> CollaborativeKind:
    """The item-item model ``cfg.collaborative`` names; ``"auto"``: dense EASE within its memory budget."""
    if cfg.collaborative != "auto":
        return cfg.collaborative
    dense_mb = n_items * n_items * 4 / 2**20  # float32 weights, held by every serving process
    return "ease" if dense_mb <= cfg.ease_dense_max_mb else "sparse_ease"


def fit_item_state(
    cfg: SonaConfig,
    catalog: Catalog,
    tables: CatalogTables,
    content_embeddings: npt.NDArray[np.float32],
    ev: EventArrays,
    w_event: npt.NDArray[np.float32],
    weights: sp.csr_matrix,
) -> ItemState:
    """Item-item weights (EASE, sparse EASE or ItemKNN on binarized ``weights``), priors, cold start."""
    n_items = len(catalog)
    binary = weights.copy()
    binary.data[:] = 1.0
    kind = collaborative_kind(cfg, n_items)
    if kind == "ease":
        collab: npt.NDArray[np.float32] | sp.csr_matrix = ease_weights(binary, cfg.ease_lambda)
    elif kind == "sparse_ease":
        collab = sparse_ease_weights(binary, cfg.ease_lambda, neighbors=cfg.ease_neighbors)
    else:
        collab = itemknn_weights(binary, neighbors=cfg.knn_neighbors)
    popularity = popularity_scores(ev.item, w_event, n_items)
    recent = ev.seconds >= ev.seconds.max() - cfg.trending_days * 86400.0
    cold_order = cold_start_order(popularity, tables.genre_matrix)
    return ItemState(
        content_unit=l2_normalize(content_embeddings),
        collab=collab,
        collab_kind=kind,
        graph=people_similarity(catalog, min_count=cfg.people_min_count),
        popularity=popularity,
        trending=popularity_scores(ev.item[recent], w_event[recent], n_items),
        cold_order=cold_order,
        cold_rank=_cold_rank(cold_order),
    )


def loaded_item_state(
    cfg: SonaConfig, catalog: Catalog, content_embeddings: npt.NDArray[np.float32], model: Any
) -> ItemState:
    """The :class:`ItemState` saved in ``model.npz`` (the graph is recomputed from the catalog)."""
    n_items = len(catalog)
    if "collab_dense" in model:
        collab = np.ascontiguousarray(model["collab_dense"])  # earlier models saved it Fortran-ordered
    else:
        collab = sp.csr_matrix(
            (model["collab_data"], model["collab_indices"], model["collab_indptr"]),
            shape=(n_items, n_items),
        )
    return ItemState(
        content_unit=l2_normalize(content_embeddings),
        collab=collab,
        collab_kind=collaborative_kind(cfg, n_items),
        graph=people_similarity(catalog, min_count=cfg.people_min_count),
        popularity=model["popularity"],
        trending=model["trending"],
        cold_order=model["cold_order"],
        cold_rank=model["cold_rank"],
    )


def qualifying(cfg: SonaConfig, ev: EventArrays) -> npt.NDArray[np.bool_]:
    """Events with a positive engagement weight (the ones profiles and sequences count)."""
    w = engagement_weight(ev.completion, ev.rating, ev.dismissed, min_completion=cfg.min_completion)
    return w > 0


def transitions_of(cfg: SonaConfig, n_items: int, ev: EventArrays) -> sp.csr_matrix:
    """The sequential source's title-to-next-title weights, from the events the model is built on."""
    return transition_weights(
        ev.user, ev.item, ev.seconds, qualifying(cfg, ev), n_items,
        window=cfg.sequence_window, decay=cfg.sequence_decay,
    )  # fmt: skip
