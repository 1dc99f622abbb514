"""The ``Sona`` engine: the facade that fits, observes, scores and recommends.

``_sona.py`` holds the class; the private modules beside it each hold one part
of its work (fit-time state, the event log, observe merging, profile rows,
calibration, explanations, batching, persistence).
"""

from sona.engine._requests import Context, OnConflict
from sona.engine._sona import Sona
from sona.models._config import SonaConfig
from sona.models._recommendation import Recommendation

__all__ = ["Context", "OnConflict", "Recommendation", "Sona", "SonaConfig"]
