"""Initial schema: content, viewing events, profiles, LoRA adapters and their blobs, training jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as of this revision (not imported from the
# models, so later model changes cannot rewrite history).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)  # UTC; see sona.storage._types.UTCDateTime
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "content",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("genres", JSON, nullable=False),
        sa.Column("release_year", sa.Integer(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("popularity", sa.Float(), nullable=False),
        sa.Column("overview", sa.Text(), nullable=False),
        sa.Column("people", JSON, nullable=False),
        sa.Column("extra_metadata", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_content"),
    )
    op.create_index("ix_content_position", "content", ["position"])

    op.create_table(
        "viewing_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("content_id", sa.String(255), nullable=False),
        sa.Column("timestamp", TS, nullable=False),
        sa.Column("completion_rate", sa.Float(), nullable=False),
        sa.Column("watch_seconds", sa.Float(), nullable=False),
        sa.Column("rating", sa.Float(), nullable=True),
        sa.Column("dismissed", sa.Boolean(), nullable=False),
        sa.Column("is_rewatch", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_viewing_events"),
        sa.UniqueConstraint("event_id", name="uq_viewing_events_event_id"),
    )
    op.create_index("ix_viewing_events_user_id_timestamp", "viewing_events", ["user_id", "timestamp"])
    op.create_index("ix_viewing_events_content_id", "viewing_events", ["content_id"])

    op.create_table(
        "user_profiles",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("preference_vector", sa.LargeBinary(), nullable=False),
        sa.Column("vector_dim", sa.Integer(), nullable=False),
        sa.Column("genre_affinities", JSON, nullable=False),
        sa.Column("temporal_patterns", JSON, nullable=False),
        sa.Column("interaction_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_profiles"),
    )

    op.create_table(
        "lora_adapters",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lora_adapters"),
        sa.UniqueConstraint("user_id", "version", name="uq_lora_adapters_user_id_version"),
    )
    op.create_index("ix_lora_adapters_user_id", "lora_adapters", ["user_id"])

    op.create_table(
        "adapter_blobs",
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("adapter_config", sa.Text(), nullable=False),
        sa.Column("weights", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "version", name="pk_adapter_blobs"),
    )

    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("events_used", sa.Integer(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("adapter_version", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metrics", JSON, nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'skipped')",
            name="ck_training_jobs_status",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_training_jobs"),
    )
    op.create_index("ix_training_jobs_user_id_created_at", "training_jobs", ["user_id", "created_at"])


def downgrade() -> None:
    for table in (
        "training_jobs",
        "adapter_blobs",
        "lora_adapters",
        "user_profiles",
        "viewing_events",
        "content",
    ):
        op.drop_table(table)  # drops the table's indexes with it
