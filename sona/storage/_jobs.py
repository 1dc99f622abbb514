"""The ``training_jobs`` table: a queue shared by every worker of every replica.

A job is inserted ``queued``; the partial unique index ``uq_training_jobs_active_user``
lets the database refuse a second queued/running job for the same user, whichever
process inserts it. A worker *claims* the oldest queued job (or a running one whose
lease expired) in one transaction: ``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL, and on SQLite the write lock ``BEGIN IMMEDIATE`` takes. The claim sets a
lease (owner, expiry) that the worker renews while it trains; only the owner of a
live lease can record the outcome. Times come from the database server on
PostgreSQL, so replicas with skewed clocks agree on when a lease expired.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from sona.errors import DataError, TrainingInProgressError, UnknownJobError, ValidationError
from sona.storage._records import JOB_STATUSES, TERMINAL_STATUSES, JobStatus, TrainingJob
from sona.storage._schema import TrainingJobRow
from sona.storage._sql import to_json

__all__ = [
    "active_job",
    "claim_job",
    "claimable",
    "create_job",
    "finish_job",
    "get_job",
    "list_jobs",
    "renew_lease",
    "update_job",
]

_T = TrainingJobRow.__table__
_ACTIVE = _T.c.status.in_(("queued", "running"))
# The conflict target must repeat the partial index's predicate as literal SQL: with bound
# parameters PostgreSQL cannot match it to the index once the statement is prepared.
_ACTIVE_SQL = sa.text("status IN ('queued', 'running')")


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
        force=bool(r["force"]),
        lease_owner=r["lease_owner"],
        lease_expires_at=r["lease_expires_at"],
        attempts=int(r["attempts"] or 0),
    )


def _now(conn: Connection) -> datetime:
    """The database server's clock on PostgreSQL (one clock for all replicas), else this machine's."""
    if conn.dialect.name == "postgresql":
        now = conn.execute(sa.select(sa.func.now())).scalar_one()
        return cast(datetime, now).astimezone(UTC)
    return datetime.now(UTC)


def active_job(conn: Connection, user_id: str) -> TrainingJob | None:
    """The user's queued or running job, if any (at most one: the unique index)."""
    row = conn.execute(sa.select(_T).where(_T.c.user_id == user_id, _ACTIVE)).mappings().first()
    return None if row is None else _job(row)


def create_job(conn: Connection, user_id: str, *, force: bool = False) -> TrainingJob:
    """Insert a ``queued`` job; :class:`TrainingInProgressError` if the user has an active one."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValidationError("user_id", "must be a non-empty string")
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for _ in range(3):  # the active job may finish between the refused insert and the read
        row = {
            "id": str(uuid.uuid4()),
            "user_id": user_id,
            "status": "queued",
            "created_at": _now(conn),
            "force": bool(force),
            "attempts": 0,
        }
        stmt = (
            insert(_T)
            .values(row)
            .on_conflict_do_nothing(index_elements=[_T.c.user_id], index_where=_ACTIVE_SQL)
            .returning(*_T.c)
        )
        created = conn.execute(stmt).mappings().first()
        if created is not None:
            return _job(created)
        existing = active_job(conn, user_id)
        if existing is not None:
            raise TrainingInProgressError(user_id, existing.job_id)
    raise DataError(f"could not queue a training job for user {user_id!r}: the active job keeps changing")


def _expired(now: datetime) -> sa.ColumnElement[bool]:
    # A running job without a lease was left by a process from before leases: nobody owns it.
    return (_T.c.status == "running") & (_T.c.lease_expires_at.is_(None) | (_T.c.lease_expires_at < now))


def claimable(conn: Connection) -> bool:
    """Whether :func:`claim_job` would find anything: a read, so idle workers poll without write locks."""
    pick = sa.select(_T.c.id).where((_T.c.status == "queued") | _expired(_now(conn))).limit(1)
    return conn.execute(pick).first() is not None


def claim_job(conn: Connection, owner: str, *, lease_seconds: float, max_attempts: int) -> TrainingJob | None:
    """Take the oldest claimable job for ``owner``, or None.

    Claimable: ``queued``, or ``running`` with an expired lease (its worker died).
    A job whose lease expired ``max_attempts`` times is failed instead of retried,
    so a job that kills its worker cannot kill every worker in turn.
    """
    now = _now(conn)
    expired = _expired(now)
    conn.execute(
        sa.update(_T)
        .where(expired, _T.c.attempts >= max_attempts)
        .values(
            status="failed",
            finished_at=now,
            lease_expires_at=None,
            error=f"abandoned: its worker stopped renewing the lease {max_attempts} times",
        )
    )
    pick = (
        sa.select(_T.c.id)
        .where((_T.c.status == "queued") | expired)
        .order_by(_T.c.created_at, _T.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    job_id = conn.execute(pick).scalar()
    if job_id is None:
        return None
    claimed = conn.execute(
        sa.update(_T)
        .where(_T.c.id == job_id)
        .values(
            status="running",
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=_T.c.attempts + 1,
            started_at=now,
            error=None,
        )
        .returning(*_T.c)
    )
    return _job(claimed.mappings().one())


def renew_lease(conn: Connection, job_id: str, owner: str, *, lease_seconds: float) -> bool:
    """Extend ``owner``'s lease; False if the job is no longer running under it."""
    expires = _now(conn) + timedelta(seconds=lease_seconds)
    result = conn.execute(
        sa.update(_T)
        .where(_T.c.id == job_id, _T.c.lease_owner == owner, _T.c.status == "running")
        .values(lease_expires_at=expires)
    )
    return result.rowcount == 1


def finish_job(
    conn: Connection, job_id: str, owner: str, changes: Mapping[str, object]
) -> TrainingJob | None:
    """Record the outcome if ``owner`` still holds the job; None if another worker took it over."""
    row = conn.execute(sa.select(_T).where(_T.c.id == job_id).with_for_update()).mappings().first()
    if row is None:
        raise UnknownJobError(job_id)
    if row["status"] != "running" or row["lease_owner"] != owner:
        return None
    return update_job(conn, job_id, {**changes, "lease_expires_at": None})


def get_job(conn: Connection, job_id: str, *, for_update: bool = False) -> TrainingJob:
    stmt = sa.select(_T).where(_T.c.id == str(job_id))
    row = conn.execute(stmt.with_for_update() if for_update else stmt).mappings().first()
    if row is None:
        raise UnknownJobError(str(job_id))
    return _job(row)


def update_job(conn: Connection, job_id: str, changes: Mapping[str, object]) -> TrainingJob:
    """Apply ``changes``; stamps start/finish times and duration when the status implies them."""
    job = get_job(conn, job_id, for_update=True)
    clear_lease = "lease_expires_at" in changes and changes["lease_expires_at"] is None
    values = {k: v for k, v in changes.items() if v is not None}
    if clear_lease:
        values["lease_expires_at"] = None
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
