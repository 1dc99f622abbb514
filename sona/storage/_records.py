"""Plain domain records that :class:`~sona.storage.Storage` returns (never ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

__all__ = [
    "JOB_STATUSES",
    "TERMINAL_STATUSES",
    "AddEventsResult",
    "AdapterRecord",
    "JobStatus",
    "OnConflict",
    "TrainingJob",
]

#: What :meth:`Storage.add_events` does with an ``event_id`` that is already stored:
#: ``"ignore"`` keeps the stored row; ``"max_progress"`` advances it to the new
#: completion/watch time/timestamp when the new observation is further along.
OnConflict = Literal["ignore", "max_progress"]

JobStatus = Literal["queued", "running", "succeeded", "failed", "skipped"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
#: Statuses after which a job never changes again.
TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({"succeeded", "failed", "skipped"})


@dataclass(frozen=True, slots=True)
class AddEventsResult:
    """Outcome of one :meth:`Storage.add_events` call.

    ``duplicates`` counts events whose ``event_id`` was already stored or
    repeated in the same batch and that changed nothing; they were ignored, not
    doubled. ``advanced`` (only with ``on_conflict="max_progress"``) counts
    stored rows moved to a further observation.
    """

    inserted: int
    duplicates: int
    inserted_event_ids: tuple[str, ...] = ()
    advanced: int = 0
    advanced_event_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdapterRecord:
    """One stored version of one user's LoRA adapter.

    ``location`` says where the files are: a directory path, or a ``db://``
    URI when the weights live in the ``adapter_blobs`` table.
    """

    user_id: str
    version: int
    rank: int
    size_bytes: int
    location: str
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: datetime | None = None
    #: The base model it was trained on (``Sona.model_id_``); None for adapters stored before model ids.
    model_id: str | None = None


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """A queued or finished adapter-training job, as ``GET /lora/jobs/{id}`` reports it."""

    job_id: str
    user_id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    events_used: int | None = None
    duration_seconds: float | None = None
    adapter_version: int | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    #: Skip the minimum-interval guard (``POST /lora/train`` with ``force``).
    force: bool = False
    #: The worker holding the job while it runs, and until when its lease holds.
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    #: How many times a worker claimed the job (more than one after a lost lease).
    attempts: int = 0

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES
