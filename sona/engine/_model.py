"""The fitted model: the immutable, shareable part of an engine, named by a content hash.

Why frozen: every process that serves one model must score alike, and what is
fitted on top of it (adapters, calibration, published versions) names it by
``model_id``. A :class:`FittedModel` holds exactly what ``save`` writes besides
the users' event history (catalog, config, content embeddings, the tower scorer,
item tables, the sequential transitions, calibration) and what is derived from
those on load (catalog lookups, the graph). Per-user state lives in
:mod:`sona.engine._user_state`; ranking reads both (:mod:`sona.engine._ranking`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Self, TypeVar, overload

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from sona.catalog import Catalog
from sona.engine._fit_state import CatalogTables, ItemState
from sona.engine._persist import item_arrays, model_id_of
from sona.engine._profile_rows import profile_state
from sona.features import EventArrays, ProfileState
from sona.models import ItemTables, PlattScaling, TowerScorer
from sona.models._config import SonaConfig

__all__ = ["FittedModel", "learned"]

_T = TypeVar("_T")


@dataclass(frozen=True, eq=False)
class FittedModel:
    """What ``fit`` learned, frozen. ``model_id`` is the content hash ``engine.json`` records.

    ``with_config`` derives a copy with other fusion weights (``Sona.reweighted``):
    it keeps the id, as the learned weights are the same, and shares the item
    tables the fusion is built from.
    """

    catalog: Catalog
    config: SonaConfig
    content_embeddings: npt.NDArray[np.float32]
    scorer: TowerScorer
    tables: CatalogTables
    items: ItemState
    #: (n_items, n_items) title-to-next-title weights of the sequential source, from the events
    #: ``fit`` saw: saved and hashed with the model, so later events never change them.
    transitions: sp.csr_matrix
    calibration: PlattScaling | None
    model_id: str
    #: The fusion's item tables, built on first use and shared by ``with_config`` copies.
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The item tables and transitions as ``save`` writes them (and the model id hashes them)."""
        it = self.items
        return item_arrays(
            it.collab,
            self.transitions,
            popularity=it.popularity,
            trending=it.trending,
            cold_order=it.cold_order,
            cold_rank=it.cold_rank,
        )

    def content_hash(self) -> str:
        """The model id these fields give (see :func:`~sona.engine._persist.model_id_of`)."""
        return model_id_of(
            catalog=self.catalog,
            config=self.config,
            content_embeddings=self.content_embeddings,
            arrays=self.arrays(),
            scorer=self.scorer,
            calibration=self.calibration,
        )

    def with_config(self, config: SonaConfig) -> FittedModel:
        return replace(self, config=config)

    def profiles(self, ev: EventArrays, n_users: int) -> ProfileState:
        """Profile rows of ``n_users`` users from their events, with this model's content embeddings."""
        return profile_state(self.config, self.tables, self.content_embeddings, ev, n_users)

    def fusion_tables(self) -> ItemTables:
        """Item-side fusion state, built once (again only if the scorer's item weights were edited)."""
        sc = self.scorer
        key = (sc.item_embeddings._version, sc.item_bias._version)
        cached = self._derived.get("fusion")
        if cached is not None and cached[0] == key:
            return cached[1]
        it = self.items
        tables = ItemTables(
            tower_items=sc.item_embeddings.detach().numpy(),
            tower_bias=sc.item_bias.detach().numpy(),
            content_items=it.content_unit,
            genre_items=np.asarray(self.tables.genre_mean_matrix.todense(), dtype=np.float32),
            popularity=it.popularity,
            trending=it.trending,
            collaborative=it.collab,
            graph=it.graph,
            sequential=self.transitions,
        )
        self._derived["fusion"] = (key, tables)
        return tables


class learned(Generic[_T]):  # noqa: N801 - used like ``property``
    """A learned engine attribute read from its :class:`FittedModel`.

    Absent (``AttributeError``, so ``hasattr`` is False) before ``fit``, as
    scikit-learn's trailing-underscore attributes are; read-only, since the model is frozen.
    """

    def __init__(self, read: Callable[[FittedModel], _T]) -> None:
        self._read = read
        self._name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> Self | _T:
        if obj is None:
            return self
        model = obj.__dict__.get("_model")
        if model is None:
            raise AttributeError(self._name)
        return self._read(model)

    def __set__(self, obj: object, value: object) -> None:
        raise AttributeError(f"{self._name} is learned by fit and read-only")
