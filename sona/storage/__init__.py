"""Persistence: SQLAlchemy 2 tables, packaged Alembic migrations and the `Storage` facade.

Only this subpackage imports SQLAlchemy. Everything it returns is a domain
object (``Catalog``, ``UserProfile``, events DataFrame, :class:`AdapterRecord`,
:class:`TrainingJob`).
"""

from sona.storage._records import (
    JOB_STATUSES,
    AdapterRecord,
    AddEventsResult,
    JobStatus,
    OnConflict,
    TrainingJob,
)
from sona.storage._storage import Storage

__all__ = [
    "JOB_STATUSES",
    "AddEventsResult",
    "AdapterRecord",
    "JobStatus",
    "OnConflict",
    "Storage",
    "TrainingJob",
]
