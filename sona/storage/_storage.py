"""`Storage`: sona's one door to the database (SQLite or PostgreSQL).

Every method runs in its own transaction, or in the caller's when called on the
view that :meth:`Storage.transaction` yields, so events and profiles can be
written all-or-nothing. SQLAlchemy errors are translated to
:class:`~sona.errors.StorageError` here, at the boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

from sona.catalog import Catalog, ContentItem
from sona.errors import StorageError, StorageUnavailableError, ValidationError
from sona.profile import UserProfile
from sona.storage import _adapters, _content, _events, _jobs, _models, _profiles
from sona.storage._models import Change, ModelVersion
from sona.storage._records import AdapterRecord, AddEventsResult, JobStatus, OnConflict, TrainingJob

__all__ = ["Storage"]

#: What a DB-API driver raises when the database, not the data, is the problem.
_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError)
#: PostgreSQL SQLSTATE classes and codes of the same kind: connection (08), resources (53),
#: operator intervention (57), rollback (40: serialization failure, deadlock), a read-only
#: server after a failover (25006), a table not migrated yet (42P01).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40"})
_UNAVAILABLE_SQLSTATES = frozenset({"25006", "42P01"})


def _unavailable(e: exc.SQLAlchemyError) -> bool:
    """Whether retrying the same write later may succeed (an outage, not rejected data)."""
    if isinstance(e, _UNAVAILABLE) or getattr(e, "connection_invalidated", False):
        return True
    state = getattr(getattr(e, "orig", None), "sqlstate", None)
    return isinstance(state, str) and (
        state[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or state in _UNAVAILABLE_SQLSTATES
    )


def _normalize_url(url: str | URL) -> URL:
    try:
        u = sa.make_url(url)
    except exc.ArgumentError as e:
        raise StorageError(f"invalid database URL {str(url)!r}") from e
    backend = u.get_backend_name()
    if backend == "postgres":  # Heroku-style alias
        u = u.set(drivername="postgresql")
        backend = "postgresql"
    if backend == "postgresql" and "+" not in u.drivername:
        u = u.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we ship
    if backend not in ("sqlite", "postgresql"):
        raise StorageError(f"unsupported database backend {backend!r}; use sqlite:// or postgresql://")
    return u


_WRITE = "sona_write"  # execution option marking a transaction that writes


def _sqlite_on_connect(dbapi_conn: Any, _record: object) -> None:
    # Let SQLAlchemy (not pysqlite) issue BEGIN, so DDL and SAVEPOINTs are transactional too.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")  # wait for a concurrent writer instead of failing
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; fsync at checkpoints
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # A writer takes the write lock up front: a deferred transaction that reads
    # and then writes can fail with "database is locked" without waiting.
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _create_engine(url: URL) -> Engine:
    try:
        if url.get_backend_name() != "sqlite":
            return sa.create_engine(url, pool_pre_ping=True)
        db = url.database or ""
        if db in ("", ":memory:") or db.startswith("file:"):
            engine = sa.create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url)
    except (exc.SQLAlchemyError, ImportError, OSError) as e:
        raise StorageError(f"cannot open database {url.render_as_string(hide_password=True)}: {e}") from e
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return str(orig or e).strip().splitlines()[0]


class Storage:
    """Persistent state of sona: catalog, events, profiles, adapters, training jobs.

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``sqlite:///data/sona.db`` or
        ``postgresql://user@host/db`` (psycopg 3 is used). A SQLite file's parent
        directory is created if needed.

    Notes
    -----
    Methods return domain objects (``Catalog``, ``UserProfile``, DataFrames,
    :class:`AdapterRecord`, :class:`TrainingJob`), never ORM rows. Database
    failures raise :class:`~sona.errors.StorageError`; bad input raises
    :class:`~sona.errors.ValidationError` before anything is written.
    """

    def __init__(self, url: str | URL) -> None:
        self.url = _normalize_url(url)
        self._engine = _create_engine(self.url)
        self._writer = self._engine.execution_options(**{_WRITE: True})
        self._conn: Connection | None = None  # set only on transaction() views

    def __repr__(self) -> str:
        return f"Storage({self.url.render_as_string(hide_password=True)!r})"

    # -- connections ------------------------------------------------------------
    @contextmanager
    def _begin(self, what: str, *, write: bool = True) -> Iterator[Connection]:
        """One transaction (or the caller's); SQLAlchemy errors become StorageError."""
        try:
            if self._conn is not None:
                yield self._conn
            else:
                with (self._writer if write else self._engine).begin() as conn:
                    yield conn
        except exc.SQLAlchemyError as e:
            kind = StorageUnavailableError if _unavailable(e) else StorageError
            raise kind(f"{what} failed: {_reason(e)}") from e

    def _read(self, what: str) -> AbstractContextManager[Connection]:
        return self._begin(what, write=False)

    @contextmanager
    def transaction(self) -> Iterator[Storage]:
        """Yield a view of this storage whose calls share one transaction.

        It commits when the block ends and rolls back everything if the block
        raises::

            with storage.transaction() as tx:
                tx.add_events(events)
                tx.save_profiles(profiles)
        """
        if self._conn is not None:  # already inside one: join it
            yield self
            return
        with self._begin("transaction") as conn:
            view = object.__new__(Storage)
            view.url, view._engine, view._writer, view._conn = self.url, self._engine, self._writer, conn
            yield view

    def ping(self) -> bool:
        """True if the database answers ``SELECT 1`` (for readiness probes; never raises)."""
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except exc.SQLAlchemyError:
            return False

    def dispose(self) -> None:
        """Close pooled connections (call before forking or at shutdown)."""
        self._engine.dispose()

    # -- schema -----------------------------------------------------------------
    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to ``revision``."""
        from sona.storage import _migrate  # Alembic is only needed here; keep `import sona` light

        with self._begin("migration upgrade") as conn:
            _migrate.upgrade(conn, revision)

    def downgrade(self, revision: str = "base") -> None:
        """Revert migrations down to ``revision``; ``"base"`` drops every sona table."""
        from sona.storage import _migrate

        with self._begin("migration downgrade") as conn:
            _migrate.downgrade(conn, revision)

    def current_revision(self) -> str | None:
        """The applied migration revision, or None on an empty database."""
        from sona.storage import _migrate

        with self._read("reading the schema revision") as conn:
            return _migrate.current_revision(conn)

    def is_up_to_date(self) -> bool:
        """True if the schema is at the newest packaged migration."""
        from sona.storage import _migrate

        return self.current_revision() == _migrate.head_revision()

    # -- catalog ----------------------------------------------------------------
    def upsert_content(self, items: Catalog | Iterable[ContentItem]) -> int:
        """Insert or update titles; new ones go after the stored ones in catalog order.

        Returns the number of titles written.
        """
        with self._begin("storing content") as conn:
            return _content.upsert_content(conn, items)

    def load_catalog(self) -> Catalog:
        """The stored catalog, in the order titles were first stored.

        Raises :class:`~sona.errors.DataError` if no content is stored.
        """
        with self._read("loading the catalog") as conn:
            return _content.load_catalog(conn)

    # -- events -----------------------------------------------------------------
    def add_events(
        self,
        events: _events.EventsInput,
        *,
        profiles: Sequence[UserProfile] | None = None,
        on_conflict: OnConflict = "ignore",
    ) -> AddEventsResult:
        """Store a batch of viewing events idempotently, in one transaction.

        Parameters
        ----------
        events
            ``ViewingEvent`` objects, mappings of their fields, or an events
            DataFrame (checked by :func:`sona.validate_events`).
        profiles
            Optional profiles saved in the same transaction, so events and the
            profile rebuilt from them are written together or not at all.
        on_conflict
            ``"ignore"`` (default): an ``event_id`` already stored keeps its row.
            ``"max_progress"``: for events observed repeatedly while they grow
            (a playback session in progress), the stored row takes the new
            ``completion_rate``, ``watch_seconds`` and ``timestamp`` when the new
            observation is further along (higher completion, then more watch
            seconds); within a batch the furthest record of an id wins. A
            replay of older or equal observations changes nothing.

        Returns
        -------
        AddEventsResult
            Ids inserted, ids advanced (``max_progress`` only), and how many
            events changed nothing (already stored or repeated in the batch).

        Raises
        ------
        ValidationError
            Naming the first bad record's index and field; nothing is written.
        """
        if on_conflict not in ("ignore", "max_progress"):
            raise ValidationError("on_conflict", f"must be 'ignore' or 'max_progress', got {on_conflict!r}")
        rows = _events.rows_from_input(events, keep=on_conflict)
        profile_list = list(profiles or ())
        total = len(events)
        with self._begin("storing events") as conn:
            if on_conflict == "ignore":
                new, advanced = _events.insert_events(conn, rows), set()
            else:
                new, advanced = _events.upsert_progress(conn, rows)
            if profile_list:
                _profiles.save_profiles(conn, profile_list)
            if new or advanced:  # the change feed: every process refreshes these users
                changed = (r["user_id"] for r in rows if r["event_id"] in new or r["event_id"] in advanced)
                _models.record_changes(conn, "user", (str(u) for u in changed))
        ids = tuple(str(r["event_id"]) for r in rows if r["event_id"] in new)
        moved = tuple(str(r["event_id"]) for r in rows if r["event_id"] in advanced)
        return AddEventsResult(
            inserted=len(new),
            duplicates=total - len(new) - len(advanced),
            inserted_event_ids=ids,
            advanced=len(advanced),
            advanced_event_ids=moved,
        )

    def events_for_users(
        self, user_ids: Sequence[str] | None = None, *, since: datetime | None = None
    ) -> pd.DataFrame:
        """Events of ``user_ids`` (all users if None) at or after ``since``, oldest first.

        Columns and dtypes are those of :data:`sona.EVENT_COLUMNS` /
        :func:`sona.validate_events`.
        """
        if isinstance(user_ids, str):
            user_ids = [user_ids]
        _aware(since, "since")
        with self._read("reading events") as conn:
            return _events.read_events(conn, user_ids, since)

    def count_qualifying_events(self, user_id: str, min_completion: float = 0.3) -> int:
        """Events of the user that are not dismissed and reached ``min_completion``."""
        with self._read("counting events") as conn:
            return _events.count_qualifying(conn, user_id, min_completion)

    def qualifying_event_counts(self, user_ids: Sequence[str], min_completion: float = 0.3) -> dict[str, int]:
        """:meth:`count_qualifying_events` of many users at once (0 for users without events)."""
        if isinstance(user_ids, str):
            user_ids = [user_ids]
        with self._read("counting events") as conn:
            return _events.count_qualifying_many(conn, user_ids, min_completion)

    def users_with_events_since(self, since: datetime) -> list[str]:
        """Distinct users with an event timestamped at or after ``since``, sorted."""
        _aware(since, "since")
        with self._read("reading events") as conn:
            return _events.users_since(conn, since)

    # -- profiles ---------------------------------------------------------------
    def save_profiles(self, profiles: Sequence[UserProfile]) -> int:
        """Insert or replace profiles (all or none); returns how many were written."""
        with self._begin("storing profiles") as conn:
            return _profiles.save_profiles(conn, list(profiles))

    def load_profile(self, user_id: str) -> UserProfile | None:
        return self.load_profiles([user_id]).get(user_id)

    def load_profiles(self, user_ids: Sequence[str] | None = None) -> dict[str, UserProfile]:
        """Profiles by user id; users without one are simply absent."""
        with self._read("loading profiles") as conn:
            return _profiles.load_profiles(conn, user_ids)

    # -- adapters ---------------------------------------------------------------
    def record_adapter(
        self,
        user_id: str,
        version: int,
        *,
        rank: int,
        size_bytes: int,
        location: str,
        metrics: Mapping[str, float] | None = None,
        created_at: datetime | None = None,
        model_id: str | None = None,
    ) -> AdapterRecord:
        """Register a saved adapter version (trained on base model ``model_id``).

        Raises :class:`~sona.errors.StorageError` if ``(user_id, version)`` exists.
        """
        _aware(created_at, "created_at")
        with self._begin(f"recording adapter {user_id!r} v{version}") as conn:
            return _adapters.record_adapter(
                conn, user_id, version, rank=rank, size_bytes=size_bytes, location=location,
                metrics=metrics, created_at=created_at, model_id=model_id,
            )  # fmt: skip

    def next_adapter_version(self, user_id: str) -> int:
        """1 for a new user, else one past the highest version ever stored."""
        with self._read("reading adapter versions") as conn:
            return _adapters.next_version(conn, user_id)

    def list_adapters(self, user_id: str) -> list[AdapterRecord]:
        """The user's adapter versions, oldest first."""
        with self._read("listing adapters") as conn:
            return _adapters.list_adapters(conn, user_id)

    def latest_adapter(self, user_id: str) -> AdapterRecord | None:
        with self._read("reading adapters") as conn:
            return _adapters.latest_adapter(conn, user_id)

    def delete_adapter(self, user_id: str, version: int) -> bool:
        """Remove a version's record and blob (for pruning and roll-back); True if it existed."""
        with self._begin(f"deleting adapter {user_id!r} v{version}") as conn:
            return _adapters.delete_adapter(conn, user_id, version)

    def put_adapter_blob(self, user_id: str, version: int, config_json: str, weights: bytes) -> None:
        """Store one version's ``adapter_config.json`` text and safetensors bytes (replacing any)."""
        with self._begin(f"storing adapter blob {user_id!r} v{version}") as conn:
            _adapters.put_blob(conn, user_id, version, config_json, weights)

    def get_adapter_blob(self, user_id: str, version: int) -> tuple[str, bytes] | None:
        """``(config_json, weights)`` of one version, or None if not stored."""
        with self._read(f"reading adapter blob {user_id!r} v{version}") as conn:
            return _adapters.get_blob(conn, user_id, version)

    def last_trained_at(self, user_id: str) -> datetime | None:
        """When the user was last trained (adapter stored or job succeeded), or None."""
        with self._read("reading training history") as conn:
            return _adapters.last_trained_at(conn, user_id)

    def last_trained_times(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        """:meth:`last_trained_at` of many users at once; users never trained are absent."""
        if isinstance(user_ids, str):
            user_ids = [user_ids]
        with self._read("reading training history") as conn:
            return _adapters.last_trained_many(conn, user_ids)

    # -- models and the change feed -------------------------------------------
    def publish_model(self, model_id: str, archive: bytes, *, source: str = "", current: bool = True) -> bool:
        """Store a saved engine's archive under its model id and (by default) make it current.

        Idempotent: publishing a model id again stores nothing (returns False) and only
        moves the pointer. Every process following the change feed switches to it.
        """
        with self._begin(f"publishing model {model_id!r}") as conn:
            added = _models.put_model(conn, model_id, archive, source)
            if current:
                _models.set_current(conn, model_id)
            return added

    def set_current_model(self, model_id: str) -> None:
        """Point the ``current`` model at a published model id (a rollout or a roll-back)."""
        with self._begin(f"setting the current model to {model_id!r}") as conn:
            _models.set_current(conn, model_id)

    def current_model_id(self, *, lock: bool = False) -> str | None:
        """The model every process should serve, or None before the first rollout.

        ``lock`` (inside :meth:`transaction`) keeps a concurrent rollout from moving it
        until the transaction ends (PostgreSQL ``FOR SHARE``).
        """
        with self._read("reading the current model") as conn:
            return _models.current_model(conn, lock=lock)

    def model_archive(self, model_id: str) -> bytes | None:
        """A published model's archive (see ``sona.engine._persist.pack_engine``), or None."""
        with self._read(f"reading model {model_id!r}") as conn:
            return _models.model_archive(conn, model_id)

    def list_models(self) -> list[ModelVersion]:
        """Published models, oldest first, the current one flagged."""
        with self._read("listing models") as conn:
            return _models.list_models(conn)

    def record_changes(self, kind: str, keys: Sequence[str]) -> int:
        """Announce changes on the feed (``user``/``adapter`` keyed by user id, ``model`` by model id)."""
        with self._begin("recording changes") as conn:
            return _models.record_changes(conn, kind, keys)

    def changes_after(self, seq: int, *, limit: int = 10_000) -> list[Change]:
        """Change-feed rows after ``seq``, oldest first."""
        with self._read("reading the change feed") as conn:
            return _models.read_changes(conn, seq, limit)

    def change_floor(self, before: datetime) -> int:
        """Highest change ``seq`` written before ``before`` (where a new follower starts reading)."""
        _aware(before, "before")
        with self._read("reading the change feed") as conn:
            return _models.change_floor(conn, before)

    def prune_changes(self, before: datetime) -> int:
        """Drop change rows older than ``before``."""
        _aware(before, "before")
        with self._begin("pruning the change feed") as conn:
            return _models.prune_changes(conn, before)

    # -- training jobs ----------------------------------------------------------
    def create_job(self, user_id: str, *, force: bool = False) -> TrainingJob:
        """A new job in status ``queued`` with a random UUID id.

        Raises
        ------
        TrainingInProgressError
            The user already has a job queued or running; the database's unique
            index decides, so this holds across processes and replicas.
        """
        with self._begin("creating a training job") as conn:
            return _jobs.create_job(conn, user_id, force=force)

    def active_job(self, user_id: str) -> TrainingJob | None:
        """The user's queued or running job, or None."""
        with self._read(f"reading the active job of {user_id!r}") as conn:
            return _jobs.active_job(conn, user_id)

    def claim_job(
        self, owner: str, *, lease_seconds: float = 60.0, max_attempts: int = 3
    ) -> TrainingJob | None:
        """Atomically take the oldest queued job (or one whose lease expired) for ``owner``.

        The job becomes ``running`` with a lease of ``lease_seconds`` that the
        owner must :meth:`renew_lease`; None when nothing is claimable. Two
        workers never get the same job. A job abandoned ``max_attempts`` times
        is failed rather than retried.
        """
        if lease_seconds <= 0:
            raise ValidationError("lease_seconds", f"must be > 0, got {lease_seconds!r}")
        with self._read("looking for a training job") as conn:
            if not _jobs.claimable(conn):  # idle workers poll: no write transaction (SQLite's lock)
                return None
        with self._begin("claiming a training job") as conn:
            return _jobs.claim_job(conn, owner, lease_seconds=lease_seconds, max_attempts=max_attempts)

    def renew_lease(self, job_id: str, owner: str, *, lease_seconds: float = 60.0) -> bool:
        """Extend the lease; False if ``owner`` no longer holds the job (it expired and was taken)."""
        with self._begin(f"renewing the lease of job {job_id!r}") as conn:
            return _jobs.renew_lease(conn, job_id, owner, lease_seconds=lease_seconds)

    def finish_job(
        self,
        job_id: str,
        owner: str,
        *,
        status: JobStatus,
        events_used: int | None = None,
        adapter_version: int | None = None,
        error: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> TrainingJob | None:
        """Record a claimed job's outcome; None (nothing written) if ``owner`` lost the lease."""
        changes = {
            "status": status, "events_used": events_used, "adapter_version": adapter_version,
            "error": error, "metrics": metrics,
        }  # fmt: skip
        with self._begin(f"finishing job {job_id!r}") as conn:
            return _jobs.finish_job(conn, job_id, owner, changes)

    def update_job(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        events_used: int | None = None,
        duration_seconds: float | None = None,
        adapter_version: int | None = None,
        error: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> TrainingJob:
        """Change the given fields (None leaves a field as is) and return the job.

        Moving to ``running`` stamps ``started_at``; moving to a final status
        stamps ``finished_at`` and ``duration_seconds`` unless given. A finished
        job's status cannot change.

        Raises
        ------
        UnknownJobError
            No job has this id (also a ``KeyError``).
        """
        _aware(started_at, "started_at")
        _aware(finished_at, "finished_at")
        changes = {
            "status": status, "started_at": started_at, "finished_at": finished_at,
            "events_used": events_used, "duration_seconds": duration_seconds,
            "adapter_version": adapter_version, "error": error, "metrics": metrics,
        }  # fmt: skip
        with self._begin(f"updating job {job_id!r}") as conn:
            return _jobs.update_job(conn, job_id, changes)

    def get_job(self, job_id: str) -> TrainingJob:
        """Raises :class:`~sona.errors.UnknownJobError` (a ``KeyError``) for an unknown id."""
        with self._read(f"reading job {job_id!r}") as conn:
            return _jobs.get_job(conn, job_id)

    def list_jobs(self, user_id: str | None = None, status: JobStatus | None = None) -> list[TrainingJob]:
        """Jobs, oldest first, optionally filtered by user and status."""
        with self._read("listing jobs") as conn:
            return _jobs.list_jobs(conn, user_id, status)


def _aware(value: datetime | None, field: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValidationError(field, "must be timezone-aware")
