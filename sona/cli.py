"""The ``sona`` command line. ``sona db upgrade`` applies the packaged migrations.

Reads settings from the environment (see :mod:`sona.config`); a bad variable
exits with status 2 and a message naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sona.config import Settings, load_settings
from sona.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from sona.storage import Storage

__all__ = ["app"]

app = typer.Typer(help="sona: personalization for a video-streaming media gateway.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations packaged with sona).", no_args_is_help=True)
app.add_typer(db_app, name="db")

UrlOption = Annotated[
    str | None, typer.Option("--url", help="Database URL; overrides DATABASE_URL.", show_default=False)
]


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _storage(url: str | None) -> Storage:
    from sona.storage import Storage  # import SQLAlchemy only when a db command runs

    try:
        return Storage(url) if url else Storage.from_settings(_settings())
    except StorageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _run(url: str | None, action: str, revision: str) -> None:
    storage = _storage(url)
    try:
        getattr(storage, action)(revision)
        current = storage.current_revision()
    except StorageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        storage.dispose()
    shown = storage.url.render_as_string(hide_password=True)
    typer.echo(f"{shown}: schema at revision {current or 'base (empty)'}")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    url: UrlOption = None,
) -> None:
    """Create or migrate the schema up to REVISION (default: the latest)."""
    _run(url, "upgrade", revision)


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; 'base' drops every table.")] = "-1",
    url: UrlOption = None,
) -> None:
    """Revert the schema to REVISION (default: one step back)."""
    _run(url, "downgrade", revision)


@db_app.command("current")
def db_current(url: UrlOption = None) -> None:
    """Print the applied revision."""
    storage = _storage(url)
    try:
        typer.echo(storage.current_revision() or "base (empty)")
    except StorageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        storage.dispose()


if __name__ == "__main__":
    app()
