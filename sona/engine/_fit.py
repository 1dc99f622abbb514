"""How a :class:`~sona.engine._model.FittedModel` comes to be: trained on events, or read from disk.

Both return the model and the in-memory user state it starts with (the
events' users and their profile rows), built through the same code so a loaded
engine scores exactly like the one that was saved.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from sona.catalog import Catalog
from sona.engine._calibrate import fit_calibration, holdout_mask
from sona.engine._fit_state import (
    base_params,
    catalog_tables,
    event_arrays,
    fit_item_state,
    loaded_item_state,
    order_matrix,
    transitions_of,
)
from sona.engine._model import FittedModel
from sona.engine._persist import SavedEngine, read_engine, saved_csr
from sona.engine._profile_rows import profile_state
from sona.engine._user_state import InMemoryUserState
from sona.features import content_features, engagement_weight, side_features
from sona.models import train_base_model
from sona.models._config import SonaConfig

__all__ = ["fit_model", "load_model", "saved_engine"]


def fit_model(
    catalog: Catalog, cfg: SonaConfig, frame: pd.DataFrame, *, checkpoint: Path | None
) -> tuple[FittedModel, InMemoryUserState]:
    """Train on ``frame`` (validated, one row per event id, sorted by user then time).

    The calibration slice (``holdout_mask``) stays out of everything learned;
    the served profiles keep it. BLAS runs with ``cfg.train_threads`` threads,
    as training's torch does: on a busy 2-core box a second OpenBLAS thread
    made the fusion tables' 30k x 65 Gram products 35x slower and dense EASE
    at 5k titles anywhere from 0.6x to 8x the one-thread time.
    """
    with threadpool_limits(cfg.train_threads, user_api="blas"):
        return _fit(catalog, cfg, frame, checkpoint)


def _fit(
    catalog: Catalog, cfg: SonaConfig, frame: pd.DataFrame, checkpoint: Path | None
) -> tuple[FittedModel, InMemoryUserState]:
    items = catalog.index_of(frame["content_id"].to_numpy())
    users = np.array(sorted(frame["user_id"].unique()), dtype=object)
    ev = event_arrays(frame, pd.Index(users).get_indexer(frame["user_id"]), items)
    n_users, n_items = len(users), len(catalog)
    tables = catalog_tables(catalog)

    # Profiles need content embeddings; a zero table first gives the weight rows to train on.
    w_event = engagement_weight(ev.completion, ev.rating, ev.dismissed, min_completion=cfg.min_completion)
    held_out = holdout_mask(cfg, ev, n_users, n_items)
    learn = ev if cfg.calibration == "in_sample" else ev.take(~held_out)
    w_learn = w_event if cfg.calibration == "in_sample" else w_event[~held_out]
    tmp = profile_state(cfg, tables, np.zeros((n_items, 1), np.float32), learn, n_users)
    trained = train_base_model(
        tmp.weights,
        order_matrix(learn, w_learn, n_users, n_items),
        side_features(tmp.hourly, tmp.recency),
        content_features(catalog, people_min_count=cfg.people_min_count),
        base_params(cfg),
        checkpoint=checkpoint,
    )
    model = FittedModel(
        catalog=catalog,
        config=cfg,
        content_embeddings=trained.content_embeddings,
        scorer=trained.scorer,
        tables=tables,
        items=fit_item_state(cfg, catalog, tables, trained.content_embeddings, learn, w_learn, tmp.weights),
        transitions=transitions_of(cfg, n_items, ev),
        calibration=None,
        model_id="",
    )
    model = replace(model, calibration=fit_calibration(model, users, frame, ev, w_event, held_out))
    model = replace(model, model_id=model.content_hash())
    return model, InMemoryUserState(model, users, frame, model.profiles(ev, n_users))


def load_model(directory: str | Path) -> tuple[FittedModel, InMemoryUserState]:
    """The model and user state saved in ``directory`` (profiles recomputed from the saved history).

    Engines saved before the transitions were part of the model get them
    rebuilt from the saved history, as those releases did on every load.
    """
    saved = read_engine(directory)
    catalog, cfg, frame, users = saved.catalog, saved.config, saved.history, saved.users
    ev = event_arrays(
        frame,
        pd.Index(users).get_indexer(frame["user_id"]),
        catalog.index_of(frame["content_id"].to_numpy()),
    )
    transitions = saved_csr(saved.arrays, "transitions", len(catalog))
    model = FittedModel(
        catalog=catalog,
        config=cfg,
        content_embeddings=saved.content_embeddings,
        scorer=saved.scorer,
        tables=catalog_tables(catalog),
        items=loaded_item_state(cfg, catalog, saved.content_embeddings, saved.arrays),
        transitions=transitions_of(cfg, len(catalog), ev) if transitions is None else transitions,
        calibration=saved.calibration,
        model_id=saved.model_id or "",
    )
    return model, InMemoryUserState(model, users, frame, model.profiles(ev, len(users)))


def saved_engine(model: FittedModel, users: np.ndarray, history: pd.DataFrame) -> SavedEngine:
    """What ``save`` writes: the model, plus the users and events profiles are recomputed from."""
    return SavedEngine(
        catalog=model.catalog,
        config=model.config,
        history=history,
        users=users,
        content_embeddings=model.content_embeddings,
        scorer=model.scorer,
        arrays=model.arrays(),
        calibration=model.calibration,
        model_id=model.model_id or None,
    )
