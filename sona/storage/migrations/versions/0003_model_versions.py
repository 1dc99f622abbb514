"""Model versions: published base models, the current-model pointer, adapters' base model, a change feed.

``lora_adapters.model_id`` records the base model an adapter was trained on
(NULL for adapters stored before: they belong to no known model and are not
attached). ``model_versions`` holds each published engine as one archive and
``model_pointer`` names the one that serves. ``state_changes`` is the feed every
process polls to learn that a user's events, an adapter or the current model
changed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as of this revision.
TS = sa.DateTime(timezone=True)  # UTC; see sona.storage._types.UTCDateTime
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("lora_adapters") as batch:
        batch.add_column(sa.Column("model_id", sa.String(64), nullable=True))
    op.create_table(
        "model_versions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("archive", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("model_id", name="uq_model_versions_model_id"),
    )
    op.create_table(
        "model_pointer",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_model_pointer"),
    )
    op.create_table(
        "state_changes",
        sa.Column("seq", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("kind IN ('user', 'adapter', 'model')", name="ck_state_changes_kind"),
        sa.PrimaryKeyConstraint("seq", name="pk_state_changes"),
    )
    op.create_index("ix_state_changes_created_at", "state_changes", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_state_changes_created_at", table_name="state_changes")
    for table in ("state_changes", "model_pointer", "model_versions"):
        op.drop_table(table)
    with op.batch_alter_table("lora_adapters") as batch:
        batch.drop_column("model_id")
