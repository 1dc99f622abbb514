"""Throw-away PostgreSQL databases, so a benchmark never shares tables with other jobs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

__all__ = ["postgres_db"]


@contextmanager
def postgres_db(server: str) -> Iterator[str]:
    """Yield the URL of a fresh database on ``server``; drop it (forcing out connections) afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
