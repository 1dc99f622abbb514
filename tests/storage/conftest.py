"""Fixtures for storage tests: a migrated `Storage` on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sona import Storage


@pytest.fixture
def storage(database_url: str) -> Iterator[Storage]:
    """A freshly migrated database (runs each test on SQLite and PostgreSQL)."""
    s = Storage(database_url)
    s.upgrade()
    yield s
    s.dispose()
