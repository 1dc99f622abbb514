"""Published base models (``model_versions``, ``model_pointer``) and the change feed (``state_changes``).

A rollout is two writes in one transaction: the archive (idempotent on the
model id) and the pointer, plus a ``model`` change row so every process polling
the feed learns about it. Writers of events and adapters add ``user`` and
``adapter`` change rows in their own transactions (see :func:`record_changes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sona.errors import ValidationError
from sona.storage._schema import ModelPointerRow, ModelVersionRow, StateChangeRow
from sona.storage._sql import dialect_insert

__all__ = [
    "Change",
    "ChangeKind",
    "ModelVersion",
    "change_floor",
    "current_model",
    "model_archive",
    "list_models",
    "prune_changes",
    "put_model",
    "read_changes",
    "record_changes",
    "set_current",
]

_M = ModelVersionRow.__table__
_P = ModelPointerRow.__table__
_C = StateChangeRow.__table__
_CURRENT = "current"
_KINDS = ("user", "adapter", "model")
ChangeKind = str


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One published model (without its archive)."""

    model_id: str
    size_bytes: int
    source: str
    created_at: datetime
    current: bool


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the change feed: ``user`` or ``adapter`` (key: a user id) or ``model`` (a model id)."""

    seq: int
    kind: str
    key: str


def _check_id(model_id: str) -> None:
    if not isinstance(model_id, str) or not model_id.strip() or len(model_id) > 64:
        raise ValidationError(
            "model_id", f"must be a non-empty string of at most 64 characters, got {model_id!r}"
        )


def put_model(conn: Connection, model_id: str, archive: bytes, source: str) -> bool:
    """Store a model's archive; False if that model id was published already (nothing changes)."""
    _check_id(model_id)
    row = {
        "model_id": model_id,
        "archive": bytes(archive),
        "size_bytes": len(archive),
        "source": str(source),
        "created_at": datetime.now(UTC),
    }
    stmt = dialect_insert(conn, _M).on_conflict_do_nothing(index_elements=["model_id"])
    return bool(conn.execute(stmt, [row]).rowcount)


def set_current(conn: Connection, model_id: str) -> None:
    """Point ``current`` at a published model and announce it on the change feed."""
    _check_id(model_id)
    if conn.execute(sa.select(_M.c.id).where(_M.c.model_id == model_id)).first() is None:
        raise ValidationError("model_id", f"model {model_id!r} is not published")
    now = datetime.now(UTC)
    stmt = dialect_insert(conn, _P)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"model_id": stmt.excluded.model_id, "updated_at": stmt.excluded.updated_at},
    )
    conn.execute(stmt, [{"name": _CURRENT, "model_id": model_id, "updated_at": now}])
    record_changes(conn, "model", [model_id])


def current_model(conn: Connection, *, lock: bool = False) -> str | None:
    """The current model id (None before any rollout); ``lock`` holds it (FOR SHARE) until commit,
    so a writer that checks it cannot interleave with a rollout moving it."""
    stmt = sa.select(_P.c.model_id).where(_P.c.name == _CURRENT)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True)
    row = conn.execute(stmt).first()
    return None if row is None else str(row[0])


def model_archive(conn: Connection, model_id: str) -> bytes | None:
    row = conn.execute(sa.select(_M.c.archive).where(_M.c.model_id == model_id)).first()
    return None if row is None else bytes(row[0])


def list_models(conn: Connection) -> list[ModelVersion]:
    """Published models, oldest first."""
    current = current_model(conn)
    stmt = sa.select(_M.c.model_id, _M.c.size_bytes, _M.c.source, _M.c.created_at).order_by(_M.c.id)
    return [ModelVersion(str(m), int(n), str(s), t, m == current) for m, n, s, t in conn.execute(stmt).all()]


def record_changes(conn: Connection, kind: str, keys: Iterable[str]) -> int:
    """Append one change row per distinct key (in the caller's transaction); returns how many."""
    if kind not in _KINDS:
        raise ValidationError("kind", f"must be one of {_KINDS}, got {kind!r}")
    now = datetime.now(UTC)
    rows = [{"kind": kind, "key": str(k)[:255], "created_at": now} for k in dict.fromkeys(keys)]
    if rows:
        conn.execute(sa.insert(_C), rows)
    return len(rows)


def read_changes(conn: Connection, after: int, limit: int = 10_000) -> list[Change]:
    """Change rows with ``seq > after``, in ``seq`` order."""
    stmt = sa.select(_C.c.seq, _C.c.kind, _C.c.key).where(_C.c.seq > after).order_by(_C.c.seq).limit(limit)
    return [Change(int(s), str(k), str(key)) for s, k, key in conn.execute(stmt).all()]


def change_floor(conn: Connection, before: datetime) -> int:
    """The highest ``seq`` written before ``before`` (0 if none): where a new reader starts."""
    stmt = sa.select(sa.func.max(_C.c.seq)).where(_C.c.created_at < before)
    top = conn.execute(stmt).scalar_one_or_none()
    return int(top or 0)


def prune_changes(conn: Connection, before: datetime) -> int:
    """Delete change rows older than ``before``; returns how many."""
    return int(conn.execute(sa.delete(_C).where(_C.c.created_at < before)).rowcount or 0)
