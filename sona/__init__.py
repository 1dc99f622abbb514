"""sona: personalization for a video-streaming media gateway.

The supported public API is what ``__all__`` lists; everything else is private.
"""

from sona import datasets, evaluation, search
from sona._ids import ContentId, UserId
from sona.catalog import Catalog, ContentItem
from sona.config import Settings, load_settings
from sona.engine import Recommendation, Sona, SonaConfig
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
from sona.events import (
    EVENT_COLUMNS,
    ViewingEvent,
    events_from_records,
    events_to_frame,
    validate_events,
)
from sona.profile import UserProfile
from sona.storage import AdapterRecord, AddEventsResult, Storage, TrainingJob

__version__ = "0.1.0"

__all__ = [
    "EVENT_COLUMNS",
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
    "InsufficientDataError",
    "NotFittedError",
    "NotFoundError",
    "Recommendation",
    "Settings",
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
    "load_settings",
    "search",
    "validate_events",
]
