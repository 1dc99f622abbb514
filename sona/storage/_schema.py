"""ORM tables. Private: :class:`~sona.storage.Storage` returns domain objects, never these rows.

The Alembic migrations in ``migrations/versions`` create exactly this schema;
``tests/storage`` compares the two so they cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sona.storage._types import JSONType, UTCDateTime

__all__ = [
    "AdapterBlobRow",
    "Base",
    "ContentRow",
    "LoraAdapterRow",
    "ModelPointerRow",
    "ModelVersionRow",
    "StateChangeRow",
    "TrainingJobRow",
    "UserProfileRow",
    "ViewingEventRow",
]

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias), not BIGINT.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType, list[str]: JSONType}


class ContentRow(Base):
    __tablename__ = "content"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    # Catalog order: models index titles by position, so it must survive a round trip.
    position: Mapped[int] = mapped_column(sa.Integer, index=True)
    title: Mapped[str] = mapped_column(sa.Text)
    genres: Mapped[list[str]]
    release_year: Mapped[int | None] = mapped_column(sa.Integer)
    duration_seconds: Mapped[float | None] = mapped_column(sa.Float)
    popularity: Mapped[float] = mapped_column(sa.Float, default=0.0)
    overview: Mapped[str] = mapped_column(sa.Text, default="")
    people: Mapped[list[str]]
    extra: Mapped[dict[str, Any]] = mapped_column("extra_metadata", JSONType)


class ViewingEventRow(Base):
    __tablename__ = "viewing_events"
    __table_args__ = (
        sa.Index("ix_viewing_events_user_id_timestamp", "user_id", "timestamp"),
        sa.Index("ix_viewing_events_content_id", "content_id"),
    )

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    user_id: Mapped[str] = mapped_column(sa.String(255))
    content_id: Mapped[str] = mapped_column(sa.String(255))
    timestamp: Mapped[datetime]
    completion_rate: Mapped[float] = mapped_column(sa.Float)
    watch_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    rating: Mapped[float | None] = mapped_column(sa.Float)
    dismissed: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    is_rewatch: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    source: Mapped[str] = mapped_column(sa.String(64), default="")


class UserProfileRow(Base):
    __tablename__ = "user_profiles"

    user_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    # Little-endian float32 bytes: exact round trip, 4 bytes per dimension.
    preference_vector: Mapped[bytes] = mapped_column(sa.LargeBinary)
    vector_dim: Mapped[int] = mapped_column(sa.Integer)
    genre_affinities: Mapped[dict[str, Any]]
    temporal_patterns: Mapped[dict[str, Any]]
    interaction_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    updated_at: Mapped[datetime]


class LoraAdapterRow(Base):
    __tablename__ = "lora_adapters"
    __table_args__ = (sa.UniqueConstraint("user_id", "version"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    version: Mapped[int] = mapped_column(sa.Integer)
    rank: Mapped[int] = mapped_column(sa.Integer)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    location: Mapped[str] = mapped_column(sa.Text)
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    #: The base model (``Sona.model_id_``) the adapter was trained on; NULL for adapters
    #: stored before model ids existed (attached to no model).
    model_id: Mapped[str | None] = mapped_column(sa.String(64))


class AdapterBlobRow(Base):
    """Adapter files in the database, so serving machines share them through PostgreSQL."""

    __tablename__ = "adapter_blobs"

    user_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    adapter_config: Mapped[str] = mapped_column(sa.Text)
    weights: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime]


_ACTIVE = "status IN ('queued', 'running')"


class TrainingJobRow(Base):
    __tablename__ = "training_jobs"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'skipped')", name="status"
        ),
        sa.Index("ix_training_jobs_user_id_created_at", "user_id", "created_at"),
        sa.Index("ix_training_jobs_status_created_at", "status", "created_at"),
        # At most one queued/running job per user, whichever replica inserts it.
        sa.Index(
            "uq_training_jobs_active_user",
            "user_id",
            unique=True,
            postgresql_where=sa.text(_ACTIVE),
            sqlite_where=sa.text(_ACTIVE),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    events_used: Mapped[int | None] = mapped_column(sa.Integer)
    duration_seconds: Mapped[float | None] = mapped_column(sa.Float)
    adapter_version: Mapped[int | None] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.Text)
    metrics: Mapped[dict[str, Any] | None]
    # The worker ("host:pid:...") that claimed the job and until when its claim holds;
    # a job whose lease expired is recovered by any worker.
    lease_owner: Mapped[str | None] = mapped_column(sa.String(255))
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    force: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())


class ModelVersionRow(Base):
    """A published base model: the saved engine directory as one archive, by model id."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    archive: Mapped[bytes] = mapped_column(sa.LargeBinary)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    source: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime]


class ModelPointerRow(Base):
    """Which published model serves: one row named ``current``, moved by a rollout."""

    __tablename__ = "model_pointer"

    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    model_id: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[datetime]


class StateChangeRow(Base):
    """The change feed every process polls: a user's events, an adapter or the current model changed.

    Written in the same transaction as the change itself, so a reader that sees
    the row also sees the change; pruned after an hour (a process that was away
    longer reloads lazily anyway).
    """

    __tablename__ = "state_changes"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('user', 'adapter', 'model')", name="kind"),
        sa.Index("ix_state_changes_created_at", "created_at"),
    )

    seq: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    key: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime]
