"""The ``lora_adapters`` (one row per version) and ``adapter_blobs`` (the files themselves) tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sona.errors import ValidationError
from sona.storage._models import record_changes
from sona.storage._records import AdapterRecord
from sona.storage._schema import AdapterBlobRow, LoraAdapterRow, TrainingJobRow
from sona.storage._sql import dialect_insert, to_json

__all__ = [
    "delete_adapter",
    "get_blob",
    "last_trained_at",
    "last_trained_many",
    "latest_adapter",
    "list_adapters",
    "next_version",
    "put_blob",
    "record_adapter",
]

_A = LoraAdapterRow.__table__
_B = AdapterBlobRow.__table__
_J = TrainingJobRow.__table__


def _record(r: sa.RowMapping) -> AdapterRecord:
    return AdapterRecord(
        user_id=r["user_id"],
        version=int(r["version"]),
        rank=int(r["rank"]),
        size_bytes=int(r["size_bytes"]),
        location=r["location"],
        metrics=dict(r["metrics"] or {}),
        created_at=r["created_at"],
        model_id=r["model_id"],
    )


def _check_key(user_id: str, version: int) -> None:
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValidationError("user_id", "must be a non-empty string")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValidationError("version", f"must be an integer >= 1, got {version!r}")


def record_adapter(
    conn: Connection,
    user_id: str,
    version: int,
    *,
    rank: int,
    size_bytes: int,
    location: str,
    metrics: Mapping[str, float] | None,
    created_at: datetime | None,
    model_id: str | None = None,
) -> AdapterRecord:
    """Insert the version's row and announce it on the change feed (same transaction)."""
    _check_key(user_id, version)
    if rank < 1 or size_bytes < 0:
        raise ValidationError("rank" if rank < 1 else "size_bytes", "must be positive")
    row = {
        "user_id": user_id,
        "version": version,
        "rank": int(rank),
        "size_bytes": int(size_bytes),
        "location": str(location),
        "metrics": to_json(dict(metrics or {}), "metrics"),
        "created_at": created_at or datetime.now(UTC),
        "model_id": model_id,
    }
    stored = conn.execute(sa.insert(_A).values(row).returning(*_A.c)).mappings().one()
    record_changes(conn, "adapter", [user_id])
    return _record(stored)


def next_version(conn: Connection, user_id: str) -> int:
    """One past the highest version ever stored for the user, in either table."""
    top_a = sa.select(sa.func.max(_A.c.version)).where(_A.c.user_id == user_id).scalar_subquery()
    top_b = sa.select(sa.func.max(_B.c.version)).where(_B.c.user_id == user_id).scalar_subquery()
    a, b = conn.execute(sa.select(top_a, top_b)).one()
    return max(a or 0, b or 0) + 1


def list_adapters(conn: Connection, user_id: str) -> list[AdapterRecord]:
    stmt = sa.select(_A).where(_A.c.user_id == user_id).order_by(_A.c.version)
    return [_record(r) for r in conn.execute(stmt).mappings()]


def latest_adapter(conn: Connection, user_id: str) -> AdapterRecord | None:
    stmt = sa.select(_A).where(_A.c.user_id == user_id).order_by(_A.c.version.desc()).limit(1)
    row = conn.execute(stmt).mappings().first()
    return None if row is None else _record(row)


def delete_adapter(conn: Connection, user_id: str, version: int) -> bool:
    """Delete the version's record and blob; True if either existed."""
    a = conn.execute(sa.delete(_A).where(_A.c.user_id == user_id, _A.c.version == version)).rowcount
    b = conn.execute(sa.delete(_B).where(_B.c.user_id == user_id, _B.c.version == version)).rowcount
    if a or b:
        record_changes(conn, "adapter", [user_id])
    return bool(a or b)


def put_blob(conn: Connection, user_id: str, version: int, config_json: str, weights: bytes) -> None:
    """Store (or replace) one version's files; the transaction makes it all-or-nothing."""
    _check_key(user_id, version)
    if not isinstance(config_json, str):
        raise ValidationError("config_json", "must be a JSON string")
    if not isinstance(weights, bytes | bytearray | memoryview):
        raise ValidationError("weights", "must be bytes")
    row = {
        "user_id": user_id,
        "version": version,
        "adapter_config": config_json,
        "weights": bytes(weights),
        "created_at": datetime.now(UTC),
    }
    stmt = dialect_insert(conn, _B)
    changed = {c: stmt.excluded[c] for c in ("adapter_config", "weights", "created_at")}
    conn.execute(stmt.on_conflict_do_update(index_elements=["user_id", "version"], set_=changed), [row])


def get_blob(conn: Connection, user_id: str, version: int) -> tuple[str, bytes] | None:
    stmt = sa.select(_B.c.adapter_config, _B.c.weights).where(
        _B.c.user_id == user_id, _B.c.version == version
    )
    row = conn.execute(stmt).first()
    return None if row is None else (str(row[0]), bytes(row[1]))


def last_trained_at(conn: Connection, user_id: str) -> datetime | None:
    """Latest of: an adapter version created, a training job finished successfully.

    A job can succeed without keeping a new adapter (it did not beat the base on
    the user's held-out tail); it still counts for the minimum-interval guard.
    """
    a = sa.select(sa.func.max(_A.c.created_at)).where(_A.c.user_id == user_id).scalar_subquery()
    j = (
        sa.select(sa.func.max(_J.c.finished_at))
        .where(_J.c.user_id == user_id, _J.c.status == "succeeded")
        .scalar_subquery()
    )
    stmt = sa.select(sa.type_coerce(a, _A.c.created_at.type), sa.type_coerce(j, _J.c.finished_at.type))
    times = [t for t in conn.execute(stmt).one() if t is not None]
    return max(times) if times else None


def last_trained_many(conn: Connection, user_ids: Sequence[str]) -> dict[str, datetime]:
    """:func:`last_trained_at` of many users, two grouped queries per chunk; untrained users are absent."""
    ids = list(dict.fromkeys(str(u) for u in user_ids))
    latest: dict[str, datetime] = {}
    for i in range(0, len(ids), 5_000):
        chunk = ids[i : i + 5_000]
        adapters = (
            sa.select(_A.c.user_id, sa.func.max(_A.c.created_at))
            .where(_A.c.user_id.in_(chunk))
            .group_by(_A.c.user_id)
        )
        jobs = (
            sa.select(_J.c.user_id, sa.func.max(_J.c.finished_at))
            .where(_J.c.user_id.in_(chunk), _J.c.status == "succeeded")
            .group_by(_J.c.user_id)
        )
        for stmt in (adapters, jobs):
            for user, when in conn.execute(stmt).all():
                if when is not None and (user not in latest or when > latest[user]):
                    latest[str(user)] = when
    return latest
