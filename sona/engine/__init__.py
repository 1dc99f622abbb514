"""The ``Sona`` engine: the facade that fits, observes, scores and recommends.

``_sona.py`` holds the class; the private modules beside it each hold one part
of its work (fit-time state, the event log, observe merging, profile rows,
calibration, explanations, batching, persistence).

The saved-engine functions (``read_engine``, ``read_model_id``, ``model_id_of``,
``pack_engine``, ``unpack_engine``) are exported for the application side, which
publishes and unpacks models without reaching into private modules.
"""

from sona.engine._persist import model_id_of, pack_engine, read_engine, read_model_id, unpack_engine
from sona.engine._requests import Context, OnConflict
from sona.engine._sona import Sona
from sona.models._config import SonaConfig
from sona.models._recommendation import Recommendation

__all__ = [
    "Context",
    "OnConflict",
    "Recommendation",
    "Sona",
    "SonaConfig",
    "model_id_of",
    "pack_engine",
    "read_engine",
    "read_model_id",
    "unpack_engine",
]
