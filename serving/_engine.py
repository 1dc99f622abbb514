"""Getting a trained engine for a service: load it, or fit and save one.

:func:`load_or_fit_engine` is shared by the HTTP service and the quickstart, so
every entry point starts from the same model: the saved engine in
``settings.engine_dir`` if there is one, else a fresh fit on MovieLens-100k
when the shared dataset is present, else on a small seeded synthetic dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from sona import Catalog, Settings, Sona
from sona.datasets import SyntheticConfig, generate_synthetic, load_movielens
from sona.storage import Storage

__all__ = ["find_movielens", "load_or_fit_engine", "training_data"]

logger = logging.getLogger("serving.engine")

#: The synthetic fallback: small enough to fit in seconds on two cores.
SYNTHETIC_FALLBACK = SyntheticConfig(n_items=500, n_users=300, events_per_user=30.0, seed=0)


def find_movielens(settings: Settings) -> Path | None:
    """ml-100k: ``$SONA_MOVIELENS``, else ``shared/datasets/ml-100k`` beside the data dir or the repo."""
    candidates = [] if settings.movielens_dir is None else [settings.movielens_dir]
    repo = Path(__file__).resolve().parents[1]
    for base in (settings.data_dir.resolve().parent, repo.parent):
        candidates.append(base / "shared" / "datasets" / "ml-100k")
    for path in candidates:
        if any(path.glob("*.inter")) or (path / "u.data").exists():
            return path
    return None


def training_data(settings: Settings) -> tuple[Catalog, pd.DataFrame, str]:
    """``(catalog, events, source)`` to fit a fresh engine on."""
    path = find_movielens(settings)
    if path is not None:
        catalog, events = load_movielens(path)
        return catalog, events, f"movielens:{path}"
    catalog, events = generate_synthetic(SYNTHETIC_FALLBACK)
    return catalog, events, "synthetic"


def load_or_fit_engine(settings: Settings, storage: Storage | None = None) -> Sona:
    """The engine saved in ``settings.engine_dir``, or a newly fitted and saved one.

    With ``storage``, the engine's catalog is upserted into the ``content``
    table, and after a fresh fit the training events are stored too, so the
    database and the engine agree on every user's history (the training
    guards count events in the database).

    A directory that exists but cannot be loaded raises (through ``Sona.load``)
    instead of being silently refitted over.
    """
    directory = settings.engine_dir
    if directory.exists() and any(directory.iterdir()):
        logger.info("loading engine from %s", directory)
        engine = Sona.load(directory)
        if storage is not None:
            storage.upsert_content(engine.catalog)
            # Events accepted after the engine was saved live only in the database:
            # replay them (observe skips event ids it already has) so a restart loses none.
            stored = storage.events_for_users()
            if len(stored):
                before = len(engine.history_)
                engine.observe(stored)
                logger.info("replayed %d stored events into the engine", len(engine.history_) - before)
        return engine
    catalog, events, source = training_data(settings)
    logger.info("no engine in %s; fitting one on %s (%d events)", directory, source, len(events))
    engine = Sona(catalog).fit(events)
    if storage is not None:
        storage.upsert_content(catalog)
        storage.add_events(events)
    engine.save(directory)
    return engine
