"""The ``sona`` command line: the library's jobs (schema, fit, scheduled adapter training, evaluation).

Settings come from the environment (see :mod:`sona_app.settings`). Exit codes, the
same for every command:

====  ==========================================================================
0     success (for ``train-adapters``: every selected user was processed)
1     the job ran but failed (a fit error; some users' adapters failed to train)
2     usage or configuration error (bad option or environment variable,
      missing model or data); nothing was changed
130   interrupted by SIGINT (Ctrl-C); ``train-adapters`` resumes on rerun
143   terminated by SIGTERM (e.g. Kubernetes); resumes on rerun as well
====  ==========================================================================

This module is the jobs' half of the CLI and imports no web or messaging
stack; ``serving.cli`` adds ``serve``, ``consume`` and ``demo-events`` to it
(the ``sona`` console script).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from sona.errors import ConfigError, DataError, SonaError, StorageError
from sona_app.settings import Settings, load_settings

if TYPE_CHECKING:
    from sona.engine import Sona, SonaConfig
    from sona.lora import AdapterStore
    from sona.storage import Storage

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "app",
    "settings_or_exit",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

app = typer.Typer(
    help="sona: personalization for a video-streaming media gateway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help wraps long words; rich's cuts them off with "…"
)
db_app = typer.Typer(
    help="Database schema (Alembic migrations packaged with sona).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(db_app, name="db", short_help="Database schema: upgrade, downgrade, current.")

UrlOption = Annotated[
    str | None, typer.Option("--url", help="Database URL; overrides DATABASE_URL.", show_default=False)
]


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _missing_sqlite_dir(url: str, settings: Settings | None) -> Path | None:
    """The missing parent directory of a SQLite file URL, unless it is sona's own data dir.

    ``Storage`` creates a SQLite file's directory, which is right for the default
    database in ``SONA_DATA_DIR`` but turns a typo in ``--url``/``DATABASE_URL``
    into a new directory tree; the CLI refuses those instead.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # Storage reports the malformed URL itself
    db = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or db in ("", ":memory:") or db.startswith("file:"):
        return None
    parent = Path(db).expanduser().resolve().parent
    if parent.exists() or (settings is not None and parent == settings.data_dir.resolve()):
        return None
    return parent


def _storage(url: str | None) -> Storage:
    from sona.storage import Storage  # import SQLAlchemy only when a db command runs

    settings = None if url else _settings()
    target = url or settings.database_url  # type: ignore[union-attr]
    missing = _missing_sqlite_dir(target, settings)
    if missing is not None:
        raise _die(f"directory {missing} of the SQLite database does not exist; create it first", EXIT_USAGE)
    try:
        return Storage(target)
    except StorageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _migration_error(exc: Exception) -> tuple[str, int] | None:
    """One line and the exit code for an Alembic or database failure; None for anything else (a bug).

    Alembic's ``CommandError`` means the request was wrong (an unknown revision):
    a usage error, exit 2. A database failure is exit 1.
    """
    from alembic.util import CommandError

    if isinstance(exc, StorageError | CommandError):
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return line, EXIT_USAGE if isinstance(exc, CommandError) else EXIT_FAILED
    return None


def _run(url: str | None, action: str, revision: str, debug: bool) -> None:
    storage = _storage(url)
    try:
        getattr(storage, action)(revision)
        current = storage.current_revision()
    except Exception as exc:
        failure = _migration_error(exc)
        if failure is None or debug:
            raise
        raise _die(f"{action} to {revision!r} failed: {failure[0]}", failure[1]) from exc
    finally:
        storage.dispose()
    shown = storage.url.render_as_string(hide_password=True)
    typer.echo(f"{shown}: schema at revision {current or 'base (empty)'}")


DebugOption = Annotated[
    bool, typer.Option("--debug", help="Show the full traceback of a failure instead of one line.")
]


@db_app.command("upgrade", short_help="Migrate the schema up (default: latest).")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    url: UrlOption = None,
    debug: DebugOption = False,
) -> None:
    """Create or migrate the schema up to REVISION (default: the latest)."""
    _run(url, "upgrade", revision, debug)


@db_app.command("downgrade", short_help="Revert the schema (default: one step).")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision; 'base' drops every table.")] = "-1",
    url: UrlOption = None,
    debug: DebugOption = False,
) -> None:
    """Revert the schema to REVISION (default: one step back)."""
    _run(url, "downgrade", revision, debug)


@db_app.command("current", short_help="Print the applied revision.")
def db_current(url: UrlOption = None, debug: DebugOption = False) -> None:
    """Print the applied revision."""
    storage = _storage(url)
    try:
        typer.echo(storage.current_revision() or "base (empty)")
    except Exception as exc:
        failure = _migration_error(exc)
        if failure is None or debug:
            raise
        raise _die(failure[0], failure[1]) from exc
    finally:
        storage.dispose()


def settings_or_exit() -> Settings:
    """The environment's settings; a bad variable prints its name and exits with status 2."""
    return _settings()


# ---------------------------------------------------------------- shared helpers
def _die(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _check_database_dir(settings: Settings) -> None:
    """Exit 2 before any work when DATABASE_URL is a SQLite file in a directory that does not exist."""
    missing = _missing_sqlite_dir(settings.database_url, settings)
    if missing is not None:
        raise _die(f"directory {missing} of the SQLite database (DATABASE_URL) does not exist", EXIT_USAGE)


def _open_storage(settings: Settings) -> Storage:
    """The configured database, migrated to the packaged head (idempotent)."""
    from sona.storage import Storage

    _check_database_dir(settings)
    storage = Storage(settings.database_url)
    storage.upgrade()
    return storage


def _adapter_store(settings: Settings, storage: Storage) -> AdapterStore:
    from sona_app.bootstrap import adapter_store

    return adapter_store(settings, storage)


def _load_engine(settings: Settings, storage: Storage | None = None) -> Sona:
    """The model the services serve (the current published one, else SONA_MODEL_DIR's): one bootstrap."""
    from sona_app.bootstrap import resolve_model

    try:
        engine = resolve_model(settings, storage)
    except StorageError as exc:
        raise _die(str(exc), EXIT_USAGE) from exc
    if engine is None:
        directory = settings.engine_dir
        raise _die(f"no trained model in {directory}; run `sona fit --data PATH` first", EXIT_USAGE)
    return engine


@contextmanager
def _graceful_stop() -> Iterator[dict[str, int]]:
    """Turn the first SIGINT/SIGTERM into a polite stop request (checked between chunks).

    Yields a dict whose ``"signal"`` entry is set to the received signal number;
    a second signal falls through to the default action (immediate exit).
    """
    got: dict[str, int] = {}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: FrameType | None) -> None:
        got["signal"] = signum
        typer.echo(
            f"\nreceived {signal.Signals(signum).name}: finishing the current chunk, then stopping", err=True
        )
        for sig in previous:
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield got
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        help="A MovieLens-100k directory (RecBole *.inter or GroupLens u.data), "
        "or 'synthetic[:USERS[xITEMS]]' for the seeded generator.",
        show_default=False,
    ),
]
EpochsOption = Annotated[
    int | None, typer.Option("--epochs", min=0, help="Base-model epochs (default: SonaConfig's).")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for data generation and training.")]


def _engine_config(epochs: int | None, seed: int, progress: bool) -> SonaConfig:
    from sona.engine import SonaConfig

    base = SonaConfig(seed=seed, progress=progress)
    return base if epochs is None else SonaConfig(seed=seed, progress=progress, epochs=epochs)


# ---------------------------------------------------------------- fit
def _secondary_process() -> bool:
    """True in a ``torchrun`` data-parallel fit's processes other than rank 0."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


@app.command("fit", short_help="Train the base model on --data and save it.")
def fit(
    data: DataOption,
    epochs: EpochsOption = None,
    seed: SeedOption = 0,
    model_dir: Annotated[
        Path | None,
        typer.Option("--model-dir", help="Where to save; default SONA_MODEL_DIR.", show_default=False),
    ] = None,
    store: Annotated[
        bool,
        typer.Option(
            "--store/--no-store",
            help="Also write the catalog and the training events to DATABASE_URL (services and "
            "train-adapters count a user's events there).",
        ),
    ] = True,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint-dir",
            help="Write a training checkpoint here after every epoch; an interrupted fit run again "
            "with the same data, options and directory resumes after its last finished epoch.",
        ),
    ] = None,
) -> None:
    """Train the shared base model on --data and save the engine to SONA_MODEL_DIR.

    With --store (the default) the model is also published to DATABASE_URL as the
    current model: running services, workers and consumers switch to it within
    seconds, without a restart, and adapters of the previous model stop serving.
    """
    from sona.engine import Sona
    from sona_app.bootstrap import publish_model
    from sona_app.datasource import load_training_data

    settings = _settings()
    if store:
        _check_database_dir(settings)
    try:
        dataset = load_training_data(data, seed=seed)
    except (ConfigError, DataError) as exc:
        raise _die(str(exc), EXIT_USAGE) from exc
    cfg = _engine_config(epochs, seed, progress)
    target = model_dir or settings.engine_dir
    t0 = time.perf_counter()
    try:
        engine = Sona(dataset.catalog, cfg).fit(dataset.events, checkpoint_dir=checkpoint_dir)
        if _secondary_process():  # under torchrun every process trains; the first one saves
            return
        engine.save(target)
    except DataError as exc:
        raise _die(str(exc), EXIT_USAGE) from exc
    except SonaError as exc:
        raise _die(str(exc), EXIT_FAILED) from exc
    fit_seconds = time.perf_counter() - t0
    if store:
        try:
            storage = _open_storage(settings)
            try:
                storage.upsert_content(dataset.catalog)
                storage.add_events(dataset.events)
                publish_model(storage, target, source=dataset.source)  # the rollout: replicas switch
            finally:
                storage.dispose()
        except StorageError as exc:
            raise _die(f"model saved to {target}, but the database write failed: {exc}", EXIT_FAILED) from exc
    typer.echo(
        f"fitted on {dataset.source}: {len(dataset.events)} events, {len(engine.user_index_)} users, "
        f"{len(dataset.catalog)} titles in {fit_seconds:.1f} s; saved to {target}"
    )


# ---------------------------------------------------------------- train-adapters
def _select_users(engine: Sona, storage: Storage, users_file: Path | None, since: str | None) -> list[str]:
    from sona_app.adapter_run import parse_since, read_user_file

    if users_file is not None:
        text = sys.stdin.read() if str(users_file) == "-" else None
        return read_user_file(users_file, text)
    if since is not None:
        return storage.users_with_events_since(parse_since(since))
    stored = storage.users_with_events_since(parse_since("1970-01-01"))
    return sorted(set(map(str, engine.users_)) | set(stored))


def _sync_events(engine: Sona, storage: Storage, users: list[str]) -> int:
    """Feed the engine the stored events it has not seen (playback, API) for ``users``; returns how many.

    The same catch-up every serving process does (:func:`sona_app.bootstrap.catch_up`).
    """
    from sona_app.bootstrap import catch_up

    before = len(engine.history_)
    catch_up(engine, storage, users)
    return len(engine.history_) - before


def _require_known_users(engine: Sona, users: list[str], users_file: Path) -> None:
    """Exit 2 when a --users file names nobody the model knows (a wrong file, not a quiet no-op)."""
    unknown = [u for u in users if not engine.known_user(u)]
    if users and len(unknown) < len(users):
        if unknown:
            typer.echo(f"warning: {len(unknown)} of {len(users)} users in {users_file} are unknown", err=True)
        return
    example = f" (e.g. {unknown[0]!r})" if unknown else ""
    raise _die(
        f"{users_file} names no user the model knows: {len(users)} ids{example}; "
        "expected one known user id per line",
        EXIT_USAGE,
    )


@app.command("train-adapters", short_help="Train per-user LoRA adapters (the scheduled job).")
def train_adapters_cmd(
    users_file: Annotated[
        Path | None,
        typer.Option(
            "--users", help="File with one user id per line ('-' reads stdin; '#' starts a comment)."
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only users with events at or after this ISO 8601 time (naive = UTC)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Train at most N of the selected users.")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Torch threads for the vectorized trainer.")
    ] = 1,
    chunk_size: Annotated[
        int,
        typer.Option(
            "--chunk-size", min=1, help="Users per vectorized training step and per checkpoint write."
        ),
    ] = 64,
    force: Annotated[
        bool, typer.Option("--force", help="Ignore the minimum interval between two trainings of a user.")
    ] = False,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id", help="Name of the run to resume; default: derived from --users/--since/--limit."
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an unfinished run's checkpoint and start over.")
    ] = False,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option("--checkpoint-dir", help="Where run checkpoints live; default $SONA_DATA_DIR/runs."),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="Train only shard I of N (I/N, 0-based): the users whose stable id hash is I mod N. "
            "Default: JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) of --shards/SONA_SHARDS, else all.",
        ),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option("--shards", min=1, help="Shard count for JOB_COMPLETION_INDEX (default: SONA_SHARDS)."),
    ] = None,
) -> None:
    """Train per-user LoRA adapters for the selected users: the scheduled (cron / CronJob) job.

    Loads the engine from SONA_MODEL_DIR, brings it up to date with the events
    stored in DATABASE_URL, then trains users in chunks. After each chunk the
    users' outcomes are written to a checkpoint, so after SIGINT/SIGTERM or a
    crash the same command continues with the users that are left. Users with
    too few events, or trained within the minimum interval, are skipped;
    adapters that do not beat the base model on the user's held-out tail are
    not kept (rejected).

    Prints one summary line: users trained, skipped and failed, median lift
    on the held-out tail, seconds. Exit codes: 0 done, 1 some users failed,
    2 usage/configuration error, 130 SIGINT, 143 SIGTERM (rerun to resume).
    """
    if users_file is not None and since is not None:
        raise typer.BadParameter("use either --users or --since, not both", param_hint="--users/--since")
    from sona_app.adapter_run import RunCheckpoint, Shard, run_adapter_training, run_key

    settings = _settings()
    try:
        part = Shard.resolve(shard, shards, settings.shard_index, settings.shard_count)
    except ConfigError as exc:
        raise _die(str(exc), EXIT_USAGE) from exc
    try:
        storage = _open_storage(settings)
    except StorageError as exc:
        raise _die(str(exc), EXIT_USAGE) from exc
    engine = _load_engine(settings, storage)
    try:
        try:
            users = _select_users(engine, storage, users_file, since)
        except ConfigError as exc:
            raise _die(str(exc), EXIT_USAGE) from exc
        users = part.owns(users)
        if limit is not None:
            users = users[:limit]
        synced = _sync_events(engine, storage, users)
        if synced:
            typer.echo(f"applied {synced} stored events the model had not seen", err=True)
        if users_file is not None:
            _require_known_users(engine, users, users_file)
        listed = None if users_file is None else "\n".join(users)  # the list's content names the run
        key = run_id or run_key(users=listed, since=since, limit=limit)
        if part.count > 1:  # one checkpoint per shard
            key = f"{key}.shard-{part.index}-of-{part.count}"
        if part.count > 1:
            typer.echo(f"shard {part.label}: {len(users)} users", err=True)
        checkpoint = RunCheckpoint(checkpoint_dir or settings.data_dir / "runs", key)
        if restart:
            checkpoint.reset()
        import torch

        torch.set_num_threads(workers)
        with _graceful_stop() as stop:
            report = run_adapter_training(
                engine,
                users,
                checkpoint=checkpoint,
                store=_adapter_store(settings, storage),
                force=force,
                chunk_size=chunk_size,
                progress=progress,
                should_stop=lambda: "signal" in stop,
            )
    except SonaError as exc:
        raise _die(str(exc), EXIT_FAILED) from exc
    finally:
        storage.dispose()
    typer.echo(report.summary_line())
    for user, reason in list(report.failures.items())[:20]:
        typer.echo(f"failed: {user}: {reason}", err=True)
    if report.interrupted:
        typer.echo(f"checkpoint: {checkpoint.path} (rerun the same command to resume)", err=True)
        raise typer.Exit(EXIT_TERMINATED if stop.get("signal") == signal.SIGTERM else EXIT_INTERRUPTED)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


# ---------------------------------------------------------------- evaluate
@app.command("evaluate", short_help="Offline evaluation against Pop, ItemKNN and EASE.")
def evaluate_cmd(
    data: DataOption,
    k: Annotated[int, typer.Option("--k", min=1, help="Cut-off of the ranking metrics.")] = 10,
    test_fraction: Annotated[
        float,
        typer.Option(
            "--test-fraction", min=0.01, max=0.99, help="Last share of each user's events held out."
        ),
    ] = 0.2,
    epochs: EpochsOption = None,
    seed: SeedOption = 0,
    baselines: Annotated[
        bool, typer.Option("--baselines/--no-baselines", help="Also score Pop, ItemKNN and EASE.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Offline evaluation on --data: temporal split, full ranking, metrics at K against baselines.

    Each user's last --test-fraction of events is held out; models are fitted
    on the rest and rank every unseen title (no sampled negatives).
    """
    import json

    from sona.engine import Sona
    from sona.evaluation import EASE, ItemKNN, Pop, evaluate, temporal_split
    from sona_app.datasource import load_training_data

    try:
        dataset = load_training_data(data, seed=seed)
        train, test = temporal_split(dataset.events, test_fraction)
    except (ConfigError, DataError) as exc:
        raise _die(str(exc), EXIT_USAGE) from exc
    cfg = _engine_config(epochs, seed, progress)
    models: dict[str, object] = {"sona": Sona(dataset.catalog, cfg)}
    if baselines:
        models.update(Pop=Pop(dataset.catalog), ItemKNN=ItemKNN(dataset.catalog), EASE=EASE(dataset.catalog))
    rows: dict[str, dict[str, float]] = {}
    try:
        for name, model in models.items():
            t0 = time.perf_counter()
            model.fit(train)  # type: ignore[attr-defined]
            rows[name] = {**evaluate(model, test, k), "seconds": time.perf_counter() - t0}  # type: ignore[arg-type]
    except SonaError as exc:
        raise _die(str(exc), EXIT_FAILED) from exc
    if as_json:
        typer.echo(json.dumps({"data": dataset.source, "k": k, "metrics": rows}, indent=2))
        return
    typer.echo(f"{dataset.source}; {len(train)} train / {len(test)} test events; metrics at {k}")
    cols = ("ndcg", "recall", "precision", "hit_rate", "coverage", "seconds")
    typer.echo(f"{'model':<8}" + "".join(f"{c:>11}" for c in cols))
    for name, m in rows.items():
        typer.echo(f"{name:<8}" + "".join(f"{m[c]:>11.4f}" for c in cols))


def main() -> None:
    """Entry for the jobs-only CLI (``python -m sona_app.cli``); the ``sona`` script is ``serving.cli``."""
    app()


if __name__ == "__main__":
    main()
