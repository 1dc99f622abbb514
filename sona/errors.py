"""Exceptions raised by sona.

Every error is rooted in :class:`SonaError`, so callers can catch at the
granularity they need::

    SonaError
    ├── ConfigError                 bad or missing configuration
    │   └── EnvVarError             an environment variable is missing or invalid
    ├── DataError                   input data is malformed or out of range
    │   ├── ValidationError         one field of one record is invalid
    │   └── DatasetFormatError      a dataset file cannot be parsed
    ├── NotFittedError              a model was used before ``fit``
    ├── NotFoundError (KeyError)    an id is unknown
    │   ├── UnknownUserError
    │   ├── UnknownContentError
    │   └── UnknownJobError
    ├── StorageError                the database or the adapter store failed
    │   ├── StorageUnavailableError the database is unreachable, busy or not migrated: retry
    │   └── AdapterCorruptError     an adapter file is missing or unreadable
    ├── FitError                    training produced an unusable model
    └── TrainingRejectedError       a training request is refused by a guard
        ├── InsufficientDataError   fewer qualifying events than required
        ├── TrainedTooRecentlyError the minimum interval has not elapsed
        └── TrainingInProgressError the user already has a job queued or running
"""

from __future__ import annotations

__all__ = [
    "AdapterCorruptError",
    "ConfigError",
    "DataError",
    "DatasetFormatError",
    "EnvVarError",
    "FitError",
    "InsufficientDataError",
    "NotFittedError",
    "NotFoundError",
    "SonaError",
    "StorageError",
    "StorageUnavailableError",
    "TrainedTooRecentlyError",
    "TrainingInProgressError",
    "TrainingRejectedError",
    "UnknownContentError",
    "UnknownJobError",
    "UnknownUserError",
    "ValidationError",
]


class SonaError(Exception):
    """Base class of every error sona raises."""


class ConfigError(SonaError):
    """Configuration is missing or invalid."""


class EnvVarError(ConfigError):
    """An environment variable is missing or has an invalid value."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"environment variable {name}: {reason}")
        self.name = name
        self.reason = reason


class DataError(SonaError):
    """Input data is malformed or out of range."""


class ValidationError(DataError):
    """One field of one record is invalid.

    ``index`` is the record's position in a batch when the record came in one.
    """

    def __init__(self, field: str, message: str, *, index: int | None = None) -> None:
        where = f"event[{index}].{field}" if index is not None else field
        super().__init__(f"{where}: {message}")
        self.field = field
        self.index = index
        self.detail = message


class DatasetFormatError(DataError):
    """A dataset file is missing or cannot be parsed."""

    def __init__(self, path: str, message: str, *, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class NotFittedError(SonaError):
    """A model was used before ``fit``."""


class NotFoundError(SonaError, KeyError):
    """An id is unknown. Also a ``KeyError``, so dict-style callers work."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownUserError(NotFoundError):
    """No preference data or adapter exists for this user."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"unknown user {user_id!r}")
        self.user_id = user_id


class UnknownContentError(NotFoundError):
    """One or more content ids are not in the catalog."""

    def __init__(self, content_ids: list[str] | str) -> None:
        ids = [content_ids] if isinstance(content_ids, str) else list(content_ids)
        shown = ", ".join(repr(c) for c in ids[:5]) + (" ..." if len(ids) > 5 else "")
        super().__init__(f"unknown content id(s): {shown}")
        self.content_ids = ids


class UnknownJobError(NotFoundError):
    """No training job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"unknown job {job_id!r}")
        self.job_id = job_id


class StorageError(SonaError):
    """The database or the adapter store failed."""


class StorageUnavailableError(StorageError):
    """The database could not be reached, was busy or read-only, or lacks a table (not migrated yet).

    Nothing about the data written is wrong, so the same write may succeed
    later: loops that retry writes (the event consumer) retry these for as long
    as they last, and treat any other :class:`StorageError` as a failure that
    will repeat on the same input.
    """


class AdapterCorruptError(StorageError):
    """An adapter's files are missing or unreadable."""

    def __init__(self, user_id: str, version: int | None, reason: str) -> None:
        super().__init__(f"adapter for user {user_id!r} v{version}: {reason}")
        self.user_id = user_id
        self.version = version
        self.reason = reason


class FitError(SonaError):
    """Training produced an unusable model (for example NaN weights)."""


class TrainingRejectedError(SonaError):
    """A training request is refused by one of the guards."""


class InsufficientDataError(TrainingRejectedError):
    """The user has fewer qualifying events than training requires."""

    def __init__(self, user_id: str, current_count: int, required: int) -> None:
        super().__init__(f"user {user_id!r} has {current_count} qualifying events; {required} are required")
        self.user_id = user_id
        self.current_count = current_count
        self.required = required


class TrainedTooRecentlyError(TrainingRejectedError):
    """The user's adapter was trained less than the minimum interval ago."""

    def __init__(self, user_id: str, retry_after_seconds: float) -> None:
        super().__init__(f"user {user_id!r} was trained recently; retry after {retry_after_seconds:.0f} s")
        self.user_id = user_id
        self.retry_after_seconds = retry_after_seconds


class TrainingInProgressError(TrainingRejectedError):
    """The user already has a training job queued or running (in any process)."""

    def __init__(self, user_id: str, job_id: str) -> None:
        super().__init__(f"user {user_id!r} already has training job {job_id} queued or running")
        self.user_id = user_id
        self.job_id = job_id
