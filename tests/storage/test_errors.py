"""Which storage failures are outages (retry later) and which will repeat on the same input."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from sona import Storage, StorageError, StorageUnavailableError, ViewingEvent


def _event(user_id: str = "u1") -> ViewingEvent:
    return ViewingEvent(
        user_id=user_id, content_id="c1", timestamp=datetime(2026, 1, 1, tzinfo=UTC), completion_rate=0.9
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens there


@pytest.mark.postgres
def test_an_unreachable_server_is_unavailable() -> None:
    storage = Storage(f"postgresql+psycopg://sona@127.0.0.1:{_closed_port()}/sona")
    with pytest.raises(StorageUnavailableError, match="failed"):
        storage.events_for_users(["u1"])
    storage.dispose()


def test_a_database_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "sona.db").mkdir()  # a directory where the file should be
    storage = Storage(f"sqlite:///{tmp_path / 'sona.db'}")
    with pytest.raises(StorageUnavailableError):
        storage.events_for_users(["u1"])
    storage.dispose()


def test_a_missing_table_is_unavailable_until_migrated(storage: Storage) -> None:
    admin = sa.create_engine(storage.url)
    with admin.begin() as conn:
        conn.execute(sa.text("DROP TABLE viewing_events"))
    admin.dispose()
    with pytest.raises(StorageUnavailableError):
        storage.add_events([_event()])


@pytest.mark.postgres
def test_a_read_only_server_is_unavailable(postgres_url: str) -> None:
    storage = Storage(postgres_url)
    storage.upgrade()
    storage.dispose()
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:  # what a replica promoted the wrong way round answers
        name = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    admin.dispose()
    storage = Storage(postgres_url)
    with pytest.raises(StorageUnavailableError, match="read-only"):
        storage.add_events([_event()])
    storage.dispose()


@pytest.mark.postgres
def test_data_the_database_refuses_is_not_an_outage(postgres_url: str) -> None:
    storage = Storage(postgres_url)
    storage.upgrade()
    bad = _event()
    object.__setattr__(bad, "user_id", "u\x00")  # past validation: PostgreSQL text cannot hold NUL
    with pytest.raises(StorageError) as info:
        storage.add_events([bad])
    assert not isinstance(info.value, StorageUnavailableError)
    storage.dispose()
