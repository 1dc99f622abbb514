"""The ``training_jobs`` table: the queue state behind ``POST /lora/train`` and ``GET /lora/jobs/{id}``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sona.errors import DataError, UnknownJobError, ValidationError
from sona.storage._records import JOB_STATUSES, TERMINAL_STATUSES, JobStatus, TrainingJob
from sona.storage._schema import TrainingJobRow
from sona.storage._sql import to_json

__all__ = ["create_job", "get_job", "list_jobs", "update_job"]

_T = TrainingJobRow.__table__


def _job(r: sa.RowMapping) -> TrainingJob:
    return TrainingJob(
        job_id=r["id"],
        user_id=r["user_id"],
        status=cast(JobStatus, r["status"]),
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        events_used=r["events_used"],
        duration_seconds=r["duration_seconds"],
        adapter_version=r["adapter_version"],
        error=r["error"],
        metrics=dict(r["metrics"] or {}),
    )


def create_job(conn: Connection, user_id: str) -> TrainingJob:
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValidationError("user_id", "must be a non-empty string")
    row = {"id": str(uuid.uuid4()), "user_id": user_id, "status": "queued", "created_at": datetime.now(UTC)}
    return _job(conn.execute(sa.insert(_T).values(row).returning(*_T.c)).mappings().one())


def get_job(conn: Connection, job_id: str, *, for_update: bool = False) -> TrainingJob:
    stmt = sa.select(_T).where(_T.c.id == str(job_id))
    row = conn.execute(stmt.with_for_update() if for_update else stmt).mappings().first()
    if row is None:
        raise UnknownJobError(str(job_id))
    return _job(row)


def update_job(conn: Connection, job_id: str, changes: Mapping[str, object]) -> TrainingJob:
    """Apply ``changes``; stamps start/finish times and duration when the status implies them."""
    job = get_job(conn, job_id, for_update=True)
    values = {k: v for k, v in changes.items() if v is not None}
    status = values.get("status")
    now = datetime.now(UTC)
    if status is not None:
        if status not in JOB_STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
        if job.done and status != job.status:
            raise DataError(
                f"job {job.job_id!r} already finished as {job.status!r}; cannot become {status!r}"
            )
        if status == "running" and job.started_at is None:
            values.setdefault("started_at", now)
        if status in TERMINAL_STATUSES:
            finished = values.setdefault("finished_at", now)
            started = values.get("started_at", job.started_at)
            if "duration_seconds" not in values and isinstance(started, datetime):
                values["duration_seconds"] = (finished - started).total_seconds()  # type: ignore[operator]
    if "metrics" in values:
        values["metrics"] = to_json(values["metrics"], "metrics")
    if "error" in values:
        values["error"] = str(values["error"])
    if values:
        conn.execute(sa.update(_T).where(_T.c.id == job.job_id).values(values))
    return get_job(conn, job.job_id)


def list_jobs(conn: Connection, user_id: str | None, status: JobStatus | None) -> list[TrainingJob]:
    stmt = sa.select(_T).order_by(_T.c.created_at, _T.c.id)
    if user_id is not None:
        stmt = stmt.where(_T.c.user_id == user_id)
    if status is not None:
        if status not in JOB_STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
        stmt = stmt.where(_T.c.status == status)
    return [_job(r) for r in conn.execute(stmt).mappings()]
