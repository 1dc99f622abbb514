"""The ``Sona`` engine: the facade that fits, observes, scores and recommends.

``_sona.py`` holds the facade; the modules beside it each hold one part:

- ``_model``: :class:`FittedModel`, the frozen model (what ``save`` writes, named by its id);
- ``_user_state``: the :class:`UserState` protocol ranking reads users through, and
  :class:`InMemoryUserState` (event log and profile rows) that notebooks use;
- ``_ranking``: ranking as functions of (model, user rows, request, adapters);
- ``_fit``/``_fit_state``/``_calibrate``: training and loading a model; the event log,
  observe merging, profile rows, explanations, batching and persistence.

The saved-engine functions (``read_engine``, ``read_model_id``, ``model_id_of``,
``pack_engine``, ``unpack_engine``) are exported for the application side, which
publishes and unpacks models without reaching into private modules.
"""

from sona.engine._model import FittedModel
from sona.engine._persist import model_id_of, pack_engine, read_engine, read_model_id, unpack_engine
from sona.engine._requests import Context, OnConflict
from sona.engine._sona import Sona
from sona.engine._user_state import InMemoryUserState, UserRows, UserState
from sona.models._config import SonaConfig
from sona.models._recommendation import Recommendation

__all__ = [
    "Context",
    "FittedModel",
    "InMemoryUserState",
    "OnConflict",
    "Recommendation",
    "Sona",
    "SonaConfig",
    "UserRows",
    "UserState",
    "model_id_of",
    "pack_engine",
    "read_engine",
    "read_model_id",
    "unpack_engine",
]
