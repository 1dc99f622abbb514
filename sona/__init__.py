"""sona: personalization for a video-streaming media gateway.

The supported public API is what ``__all__`` lists; everything else is private.
The library reads no environment variables and has no command line: settings,
the ``sona`` command and the process bootstrap live in ``sona_app``.

Names are imported on first use (PEP 562 ``__getattr__``), so ``import sona`` and
the ``sona`` CLI's ``--help`` do not pay for torch, SQLAlchemy or peft until a
model, the storage or an adapter is actually touched; ``from sona import Sona``
works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sona._ids import ContentId, UserId
from sona._lazy import lazy_exports
from sona.errors import (
    AdapterCorruptError,
    ConfigError,
    DataError,
    DatasetFormatError,
    EnvVarError,
    FitError,
    InsufficientDataError,
    NotFittedError,
    NotFoundError,
    SonaError,
    StorageError,
    StorageUnavailableError,
    TrainedTooRecentlyError,
    TrainingRejectedError,
    UnknownContentError,
    UnknownJobError,
    UnknownUserError,
    ValidationError,
)

if TYPE_CHECKING:
    from sona import datasets, evaluation, search
    from sona.catalog import Catalog, ContentItem
    from sona.engine import Recommendation, Sona, SonaConfig
    from sona.evaluation import tune
    from sona.events import (
        EVENT_COLUMNS,
        ViewingEvent,
        events_from_records,
        events_to_frame,
        validate_events,
    )
    from sona.identifiers import IDENTIFIER_RULE, Identifier, identifier_problem
    from sona.profile import UserProfile
    from sona.storage import AdapterRecord, AddEventsResult, Storage, TrainingJob

__version__ = "0.1.0"

# public name -> the module that defines it (a subpackage maps to itself)
_LAZY: dict[str, str] = {
    "datasets": "sona.datasets",
    "evaluation": "sona.evaluation",
    "search": "sona.search",
    "tune": "sona.evaluation",
    "Catalog": "sona.catalog",
    "ContentItem": "sona.catalog",
    "Recommendation": "sona.engine",
    "Sona": "sona.engine",
    "SonaConfig": "sona.engine",
    "EVENT_COLUMNS": "sona.events",
    "ViewingEvent": "sona.events",
    "events_from_records": "sona.events",
    "events_to_frame": "sona.events",
    "validate_events": "sona.events",
    "IDENTIFIER_RULE": "sona.identifiers",
    "Identifier": "sona.identifiers",
    "identifier_problem": "sona.identifiers",
    "UserProfile": "sona.profile",
    "AdapterRecord": "sona.storage",
    "AddEventsResult": "sona.storage",
    "Storage": "sona.storage",
    "TrainingJob": "sona.storage",
    # subpackages reachable as attributes after `import sona`, as when this file imported them eagerly
    "catalog": "sona.catalog",
    "engine": "sona.engine",
    "events": "sona.events",
    "features": "sona.features",
    "lora": "sona.lora",
    "models": "sona.models",
    "profile": "sona.profile",
    "storage": "sona.storage",
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

__all__ = [
    "EVENT_COLUMNS",
    "IDENTIFIER_RULE",
    "AdapterCorruptError",
    "AdapterRecord",
    "AddEventsResult",
    "Catalog",
    "ConfigError",
    "ContentId",
    "ContentItem",
    "DataError",
    "DatasetFormatError",
    "EnvVarError",
    "FitError",
    "Identifier",
    "InsufficientDataError",
    "NotFittedError",
    "NotFoundError",
    "Recommendation",
    "Sona",
    "SonaConfig",
    "SonaError",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
    "TrainedTooRecentlyError",
    "TrainingJob",
    "TrainingRejectedError",
    "UnknownContentError",
    "UnknownJobError",
    "UnknownUserError",
    "UserId",
    "UserProfile",
    "ValidationError",
    "ViewingEvent",
    "__version__",
    "datasets",
    "evaluation",
    "events_from_records",
    "events_to_frame",
    "identifier_problem",
    "search",
    "tune",
    "validate_events",
]
