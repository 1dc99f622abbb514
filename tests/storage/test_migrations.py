"""Packaged Alembic migrations and the `sona db` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from typer.testing import CliRunner

from sona import Storage, StorageError
from sona_app.cli import app

TABLES = {
    "content",
    "viewing_events",
    "user_profiles",
    "lora_adapters",
    "adapter_blobs",
    "training_jobs",
    "model_versions",
    "model_pointer",
    "state_changes",
}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_everything_and_downgrade_removes_it(database_url: str) -> None:
    storage = Storage(database_url)
    assert _tables(database_url) == set()
    assert storage.current_revision() is None

    storage.upgrade()
    assert _tables(database_url) == TABLES | {"alembic_version"}
    assert storage.is_up_to_date()
    engine = sa.create_engine(database_url)
    indexes = {ix["name"]: ix["column_names"] for ix in sa.inspect(engine).get_indexes("viewing_events")}
    engine.dispose()
    assert indexes["ix_viewing_events_user_id_timestamp"] == ["user_id", "timestamp"]
    assert indexes["ix_viewing_events_content_id"] == ["content_id"]

    storage.upgrade()  # idempotent
    storage.downgrade()
    assert _tables(database_url) == {"alembic_version"}
    assert storage.current_revision() is None
    storage.dispose()


def test_migration_matches_the_models(database_url: str) -> None:
    """The hand-written migration and the ORM models describe the same schema."""
    from sona.storage._schema import Base

    Storage(database_url).upgrade()
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_unreachable_or_invalid_database_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unsupported database backend"):
        Storage("mysql://u@localhost/db")
    with pytest.raises(StorageError, match="invalid database URL"):
        Storage("not a url")
    down = Storage("postgresql://nobody@127.0.0.1:1/none")
    assert down.ping() is False
    with pytest.raises(StorageError, match="migration upgrade failed"):
        down.upgrade()


def test_cli_db_upgrade_and_downgrade(database_url: str) -> None:
    env = {"DATABASE_URL": database_url}
    runner = CliRunner()

    result = runner.invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert "revision 0003" in result.output
    assert _tables(database_url) == TABLES | {"alembic_version"}

    result = runner.invoke(app, ["db", "current"], env=env)
    assert result.output.strip() == "0003"

    result = runner.invoke(app, ["db", "downgrade"], env=env)  # one step back
    assert result.exit_code == 0, result.output
    assert "revision 0002" in result.output
    assert _tables(database_url) == TABLES - {"model_versions", "model_pointer", "state_changes"} | {
        "alembic_version"
    }

    result = runner.invoke(app, ["db", "downgrade", "base"], env=env)
    assert result.exit_code == 0, result.output
    assert "base (empty)" in result.output
    assert _tables(database_url) == {"alembic_version"}


def test_cli_default_sqlite_file_is_created_under_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"  # does not exist yet
    env = {"DATABASE_URL": None, "SONA_DATA_DIR": str(data_dir)}
    result = CliRunner().invoke(app, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    assert _tables(f"sqlite:///{data_dir / 'sona.db'}") >= TABLES


def test_cli_rejects_an_invalid_database_url() -> None:
    result = CliRunner().invoke(app, ["db", "upgrade"], env={"DATABASE_URL": "mysql://x/y"})
    assert result.exit_code == 2
    assert "DATABASE_URL" in result.output
