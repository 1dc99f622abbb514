"""Training-job leases: any worker of any replica claims a job; one active job per user.

Adds the lease owner and expiry a worker holds while it trains, the number of
claims (attempts), whether the request skips the minimum-interval guard (force),
and a partial UNIQUE index so the database itself refuses a second
queued/running job for a user, whichever process inserts it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as of this revision.
TS = sa.DateTime(timezone=True)  # UTC; see sona.storage._types.UTCDateTime
ACTIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(255), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", TS, nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        # Whether the request skipped the minimum-interval guard: the worker that claims
        # the job may be another process, so the flag travels with the row.
        batch.add_column(sa.Column("force", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Before 0002 the one-job-per-user guard was per process, so two replicas could both
    # have queued a job for one user: keep the newest, fail the others, then index.
    op.execute(
        sa.text(
            "UPDATE training_jobs SET status = 'failed', "
            "error = 'superseded by a newer job for the same user (migration 0002)' "
            f"WHERE {ACTIVE} AND EXISTS (SELECT 1 FROM training_jobs AS newer "
            "WHERE newer.user_id = training_jobs.user_id "
            "AND newer.status IN ('queued', 'running') "
            "AND (newer.created_at > training_jobs.created_at "
            "OR (newer.created_at = training_jobs.created_at AND newer.id > training_jobs.id)))"
        )
    )
    op.create_index(
        "uq_training_jobs_active_user",
        "training_jobs",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    # Workers poll for the oldest queued job and for expired leases.
    op.create_index("ix_training_jobs_status_created_at", "training_jobs", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_status_created_at", table_name="training_jobs")
    op.drop_index("uq_training_jobs_active_user", table_name="training_jobs")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("force")
        batch.drop_column("attempts")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
