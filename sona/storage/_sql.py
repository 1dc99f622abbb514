"""Small helpers shared by the storage modules: dialect-aware INSERT and JSON cleaning."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from sona.errors import StorageError, ValidationError

__all__ = ["dialect_insert", "to_json"]


def dialect_insert(conn: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ``ON CONFLICT`` (both backends we run on have it)."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise StorageError(f"unsupported database backend {name!r}; use SQLite or PostgreSQL")


def _clean(value: object, field: str) -> Any:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None  # JSON (and JSONB) has no NaN/inf
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_clean(v, field) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _clean(v, field) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, field) for v in value]
    raise ValidationError(field, f"cannot be stored as JSON: {type(value).__name__}")


def to_json(value: object, field: str) -> Any:
    """Plain JSON-able copy of ``value``: numpy scalars unwrapped, non-finite floats → null."""
    return _clean(value, field)
