"""Getting a trained engine for a service: load it, or fit and save one.

:func:`load_or_fit_engine` is shared by the HTTP service and the quickstart, so
every entry point starts from the same model: the current published model in
the database, else the saved engine in ``settings.engine_dir``, else a fresh fit
on MovieLens-100k when the shared dataset is present, else on a small seeded
synthetic dataset.
"""

from __future__ import annotations

import logging

import pandas as pd

from sona import Catalog, Sona
from sona.storage import Storage
from sona_app.bootstrap import publish_model, resolve_model
from sona_app.datasource import default_training_data
from sona_app.settings import Settings

__all__ = ["load_or_fit_engine", "training_data"]

logger = logging.getLogger("serving.engine")


def training_data(settings: Settings) -> tuple[Catalog, pd.DataFrame, str]:
    """``(catalog, events, source)`` to fit a fresh engine on: MovieLens-100k if found, else synthetic."""
    data = default_training_data(settings)
    return data.catalog, data.events, data.source


def load_or_fit_engine(settings: Settings, storage: Storage | None = None) -> Sona:
    """The model every process serves (:func:`sona_app.bootstrap.resolve_model`), or a newly fitted one.

    Resolution order: the current published model in the database, else the engine
    saved in ``settings.engine_dir`` (then published). Nothing is replayed: users'
    events stored after the model was saved are read per user, lazily, by
    :class:`sona_app.bootstrap.LiveEngine`, so start-up time does not grow with history.

    With no model anywhere, one is fitted (MovieLens-100k if present, else synthetic),
    saved, its catalog and training events stored and the model published.
    A directory that exists but cannot be loaded raises instead of being refitted over.
    """
    engine = resolve_model(settings, storage)
    if engine is not None:
        if storage is not None:
            storage.upsert_content(engine.catalog)
        return engine
    directory = settings.engine_dir
    if directory.exists() and any(directory.iterdir()):
        return Sona.load(directory)  # not a complete engine: let its error name the problem
    catalog, events, source = training_data(settings)
    logger.info("no engine in %s; fitting one on %s (%d events)", directory, source, len(events))
    engine = Sona(catalog).fit(events)
    engine.save(directory)
    if storage is not None:
        storage.upsert_content(catalog)
        storage.add_events(events)
        publish_model(storage, directory, source=source)
    return engine
