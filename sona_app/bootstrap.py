"""How every process gets its model, adapters and user state: the one bootstrap.

The service (every worker of every replica), the Kafka consumer and the
commands (``sona train-adapters``) resolve the model the same way:

1. the **current published model** in the database (``model_pointer``), unpacked
   once into ``$SONA_DATA_DIR/models/<model id>``;
2. else the saved engine in ``SONA_MODEL_DIR`` (``$SONA_DATA_DIR/model``), which is
   then published so the database holds the truth from then on;
3. else nothing (the service fits one; commands exit with a usage error).

``sona fit`` publishes each new model and moves the pointer (:func:`publish_model`).

A serving process wraps its engine in a :class:`LiveEngine`, which follows the
database's change feed (``state_changes``, polled every 200 ms):

- ``user`` changes (events accepted by any process) re-read that user's events
  from the database into the engine (``observe`` with ``max_progress``, keyed by
  event ids, so it is idempotent); users this process has not served yet are read
  lazily, on their first request (:meth:`LiveEngine.ensure_user`), so start-up
  never replays history; at most ``SONA_USER_CACHE_SIZE`` users stay in the
  engine, the least recently served are dropped (``Sona.forget_users``) and read
  again on their next request;
- ``adapter`` changes drop the user's resident adapter, so the next request
  reads the newest version from the store;
- ``model`` changes load the new model aside, attach its adapters, then swap the
  engine reference (requests in flight finish on the old one).

Bringing a loaded engine up to date with the users' stored events is one
function, :func:`catch_up` (the live engine and ``sona train-adapters`` both use
it); choosing the adapter store is one, :func:`adapter_store`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sona.errors import SonaError, StorageError, UnknownContentError

if TYPE_CHECKING:
    import pandas as pd

    from sona.engine import OnConflict, Sona
    from sona.lora import AdapterStore, UserAdapterConfig
    from sona.profile import UserProfile
    from sona.storage import Storage
    from sona_app.settings import Settings

__all__ = [
    "LiveEngine",
    "adapter_store",
    "catch_up",
    "load_published",
    "publish_model",
    "resolve_model",
]

log = logging.getLogger("sona_app.bootstrap")

#: How often a live engine reads the change feed.
POLL_SECONDS = 0.2
#: How often it also compares the current-model pointer directly (a missed feed row cannot strand it).
POINTER_SECONDS = 5.0
#: Change rows older than this are deleted (a process away longer re-reads users lazily anyway).
FEED_RETENTION = timedelta(hours=1)
#: A sequence number missing from the feed is waited for this long (a transaction that took its
#: number may commit after a later one); after that it is taken as rolled back.
GAP_SECONDS = 10.0


def adapter_store(settings: Settings, storage: Storage) -> AdapterStore:
    """The configured adapter store (``SONA_ADAPTER_STORE``): the database, or a directory it registers."""
    from sona.lora import DatabaseAdapterStore, DirectoryAdapterStore

    if settings.adapter_store == "database":
        return DatabaseAdapterStore(storage)
    return DirectoryAdapterStore(settings.adapter_dir, storage=storage)


def _stored_events(storage: Storage, user_ids: Sequence[str]) -> pd.DataFrame | None:
    """The users' stored events (every process's writes), or None when there are none."""
    users = list(dict.fromkeys(str(u) for u in user_ids))
    if not users:
        return None
    events = storage.events_for_users(users)
    return None if events.empty else events


def _apply_events(engine: Sona, events: pd.DataFrame) -> int:
    """Observe ``events`` the engine lacks or holds at less progress (idempotent); returns rows read."""
    known = engine.catalog.lookup(events["content_id"]) >= 0
    frame = events[known].reset_index(drop=True)
    try:
        if len(frame):
            engine.observe(frame, on_conflict="max_progress")
    except UnknownContentError:  # pragma: no cover - filtered above
        users = frame["user_id"].head(5).tolist()
        log.warning("stored events of %s name titles the model does not know", users)
    return len(events)


def catch_up(engine: Sona, storage: Storage, user_ids: Sequence[str]) -> int:
    """Bring ``engine`` up to date with the users' events stored in the database; returns rows read.

    Events stored since the model was fitted (playback, ``/profile/update``, any
    replica) are observed with ``on_conflict="max_progress"``, keyed by event id, so
    a repeat changes nothing; titles the model does not know are skipped. The one
    way a loaded engine catches up: the serving processes' :class:`LiveEngine`
    (per user, on first request and on change) and ``sona train-adapters``.
    """
    events = _stored_events(storage, user_ids)
    return 0 if events is None else _apply_events(engine, events)


def _has_engine(directory: Path) -> bool:
    return directory.is_dir() and (directory / "engine.json").exists()


def publish_model(storage: Storage, directory: str | Path, *, source: str = "", current: bool = True) -> str:
    """Publish the engine saved in ``directory`` to the database and (by default) make it current.

    Every serving process following the change feed switches to it. Returns its model id.
    """
    from sona.engine import pack_engine, read_engine, read_model_id

    model_id = read_model_id(directory) or read_engine(directory).model_id
    assert model_id is not None
    storage.publish_model(model_id, pack_engine(directory), source=source, current=current)
    return model_id


def load_published(settings: Settings, storage: Storage, model_id: str) -> Sona:
    """The published model ``model_id``, unpacked once under ``$SONA_DATA_DIR/models/``."""
    from sona.engine import Sona, read_model_id, unpack_engine

    target = settings.data_dir / "models" / model_id
    if read_model_id(target) != model_id:
        archive = storage.model_archive(model_id)
        if archive is None:
            raise StorageError(f"model {model_id!r} is not published in the database")
        unpack_engine(archive, target)
    try:
        return Sona.load(target)
    except StorageError:  # another process on this data dir was swapping the same copy in: read again
        time.sleep(0.2)
        return Sona.load(target)


def resolve_model(settings: Settings, storage: Storage | None) -> Sona | None:
    """The model this process should serve: the current published one, else ``SONA_MODEL_DIR``'s.

    A model found only in ``SONA_MODEL_DIR`` is published (and made current when no
    model is), so the next process finds it in the database. None when there is none.
    """
    from sona.engine import Sona

    if storage is not None:
        current = storage.current_model_id()
        if current is not None:
            log.info("serving the current published model %s", current)
            return load_published(settings, storage, current)
    directory = settings.engine_dir
    if not _has_engine(directory):
        return None
    engine = Sona.load(directory)
    if storage is not None:
        model_id = publish_model(storage, directory, source=str(directory), current=False)
        if storage.current_model_id() is None:
            storage.set_current_model(model_id)
        current = storage.current_model_id()
        if current != model_id:  # another process published a different model first: serve that
            return load_published(settings, storage, current) if current else engine
    log.info("serving the model in %s (%s)", directory, engine.model_id_)
    return engine


class LiveEngine:
    """A served engine kept current with the shared database (see the module docstring).

    Parameters
    ----------
    engine
        The resolved model; swapped for a new one when the current model changes.
    storage, settings
        The shared database and where published models are unpacked.
    store, adapter_config
        Adapters attached to every engine served (only those of its model id attach).
    lock
        Serializes writers of the engine's user state (the service's write lock).
    on_swap
        Called with the new engine after a model switch (the service repoints its state).
    on_stale
        Called when an adapter of another model is refused (a metric).
    on_forget
        Called with how many users were just dropped to stay within ``max_users`` (a metric).
    max_users
        How many users this process keeps in its engine (default: ``SONA_USER_CACHE_SIZE``).
        Past that, the least recently served are dropped from the engine (``Sona.forget_users``)
        and read again from the database on their next request, so a long-running worker holds
        its active users' events, not those of every user it ever served.
    """

    def __init__(
        self,
        engine: Sona,
        storage: Storage,
        *,
        settings: Settings,
        store: AdapterStore | None = None,
        adapter_config: UserAdapterConfig | None = None,
        lock: threading.RLock | None = None,
        on_swap: Callable[[Sona], None] | None = None,
        on_stale: Callable[[str, str | None], None] | None = None,
        on_forget: Callable[[int], None] | None = None,
        max_users: int | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.store = store
        self.adapter_config = adapter_config
        self.lock = lock or threading.RLock()
        self.on_swap = on_swap
        self.on_stale = on_stale
        self.on_forget = on_forget
        self.max_users = settings.user_cache_size if max_users is None else max_users
        self.poll_seconds = poll_seconds
        self.swaps = 0
        self.forgotten = 0  # users dropped from the engine to keep within max_users
        self.last_swap_seconds: float | None = None
        self._checked: OrderedDict[str, None] = OrderedDict()
        self._checked_lock = threading.Lock()
        self._cursor = storage.change_floor(datetime.now(UTC) - timedelta(seconds=GAP_SECONDS))
        self._gaps: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_pointer = 0.0
        self._next_prune = 0.0
        self._engine = self._with_adapters(engine)

    @property
    def engine(self) -> Sona:
        return self._engine

    def _with_adapters(self, engine: Sona) -> Sona:
        if self.store is not None or self.adapter_config is not None:
            from sona.lora import attach_adapters

            adapters = attach_adapters(engine, config=self.adapter_config, store=self.store)
            adapters.on_stale = self.on_stale
        return engine

    # -- user state ---------------------------------------------------------------
    def ensure_user(self, user_id: str) -> None:
        """Bring one user's state up to date from the database before serving them (first request only)."""
        self.ensure_users([user_id])

    def ensure_users(self, user_ids: Sequence[str]) -> None:
        """:meth:`ensure_user` for many: the users not resident in the engine are read in one query.

        Every user named counts as just used; users beyond ``max_users`` that were
        used least recently are dropped from the engine.
        """
        batch = list(dict.fromkeys(str(u) for u in user_ids))
        missing: list[str] = []
        with self._checked_lock:
            for uid in batch:
                if uid in self._checked:
                    self._checked.move_to_end(uid)
                else:
                    # Marked before reading: a change that lands during the read is then applied by the
                    # follower too (observe never moves a row back, so the two reads cannot undo each other).
                    self._checked[uid] = None
                    missing.append(uid)
            evicted = self._evict(set(batch))
        if evicted:
            self._forget(evicted)
        if not missing:
            return
        try:
            self.refresh_users(missing)
        except SonaError:
            with self._checked_lock:
                for uid in missing:
                    self._checked.pop(uid, None)
            raise

    def observe(self, events: pd.DataFrame, *, on_conflict: OnConflict = "ignore") -> Sona:
        """Observe ``events`` into the engine served now, under the write lock (an event sink's path).

        Their users count as served for ``max_users``; one not resident is read whole from the
        database first, so a user dropped earlier is never left holding only its newest events.
        """
        self.ensure_users(events["user_id"].astype(str).unique().tolist())
        with self.lock:
            return self._engine.observe(events, on_conflict=on_conflict)

    def profiles(self, user_ids: Sequence[str]) -> list[UserProfile]:
        """The users' profiles from the engine served now (after :meth:`observe`, for the sink to store)."""
        with self.lock:
            return self._engine.profiles(user_ids)

    def forget_users(self, user_ids: Sequence[str]) -> None:
        """Drop these users from the engine now (an event sink's bound); their next use reads them again."""
        ids = [str(u) for u in user_ids]
        with self._checked_lock:
            for uid in ids:
                self._checked.pop(uid, None)
        self._forget(ids)

    def _evict(self, keep: set[str]) -> list[str]:
        """Unmark the least recently used users beyond ``max_users`` (never ones in ``keep``); caller
        holds ``_checked_lock``."""
        evicted: list[str] = []
        while len(self._checked) > self.max_users:
            oldest = next(iter(self._checked))
            if oldest in keep:  # one batch larger than the bound: it stays whole until the next one
                break
            del self._checked[oldest]
            evicted.append(oldest)
        return evicted

    def _forget(self, user_ids: list[str]) -> None:
        """Drop evicted users' per-process state from the engine (their next request reads them again)."""
        with self.lock:  # the order switch() takes the two locks in
            with self._checked_lock:  # a user requested again meanwhile is kept (it was re-read or will be)
                gone = [u for u in user_ids if u not in self._checked]
            if gone:
                self._engine.forget_users(gone)
                self.forgotten += len(gone)
        if gone and self.on_forget is not None:
            self.on_forget(len(gone))

    def refresh_users(self, user_ids: Sequence[str]) -> int:
        """Observe the users' stored events the engine lacks or has at less progress; returns rows read."""
        events = _stored_events(self.storage, user_ids)  # read outside the lock: requests keep flowing
        if events is None:
            return 0
        with self.lock:
            return _apply_events(self._engine, events)  # :func:`catch_up`, into the engine served now

    def _refresh_resident(self, user_ids: Sequence[str]) -> None:
        """:meth:`refresh_users` for the users still resident when the write lock is held: one dropped
        meanwhile stays dropped (its next request reads it)."""
        events = _stored_events(self.storage, user_ids)
        if events is None:
            return
        with self.lock:
            with self._checked_lock:
                resident = [u for u in dict.fromkeys(events["user_id"].astype(str)) if u in self._checked]
            if resident:
                _apply_events(self._engine, events[events["user_id"].astype(str).isin(resident)])

    # -- the change feed ---------------------------------------------------------------
    def poll(self) -> None:
        """Read the change feed once and apply what it says (the follower thread calls this)."""
        low = (min(self._gaps) - 1) if self._gaps else self._cursor
        changes = self.storage.changes_after(low)
        now = time.monotonic()
        fresh = [c for c in changes if c.seq > self._cursor or c.seq in self._gaps]
        if changes:
            seen = {c.seq for c in changes}
            for s in seen:
                self._gaps.pop(s, None)
            top = max(seen)
            if top - self._cursor < 100_000:  # numbers skipped so far may still commit: wait for them
                for n in range(self._cursor + 1, top):
                    if n not in seen:
                        self._gaps.setdefault(n, now)
            self._cursor = max(self._cursor, top)
        for n in [n for n, t in self._gaps.items() if now - t > GAP_SECONDS]:
            del self._gaps[n]
        models = [c.key for c in fresh if c.kind == "model"]
        if models or now >= self._next_pointer:
            self._next_pointer = now + POINTER_SECONDS
            current = self.storage.current_model_id()
            if current is not None and current != self._engine.model_id_:
                self.switch(current)
        users = {c.key for c in fresh if c.kind == "user"}
        if users:
            with self._checked_lock:
                served = [u for u in users if u in self._checked]
            self._refresh_resident(served)  # users not served yet are read on their first request
        adapters = {c.key for c in fresh if c.kind == "adapter"}
        if adapters:
            self._engine.forget_adapters(sorted(adapters))
        if now >= self._next_prune:
            self._next_prune = now + 60.0
            self.storage.prune_changes(datetime.now(UTC) - FEED_RETENTION)

    def switch(self, model_id: str) -> None:
        """Load published model ``model_id`` aside, attach its adapters, then swap it in."""
        t0 = time.perf_counter()
        new = self._with_adapters(load_published(self.settings, self.storage, model_id))
        with self.lock:
            old = self._engine
            self._engine = new
            with self._checked_lock:
                self._checked.clear()  # every user is re-read into the new engine on first request
            if self.on_swap is not None:
                self.on_swap(new)
        self.swaps += 1
        self.last_swap_seconds = time.perf_counter() - t0
        log.info("switched model %s -> %s in %.2f s", old.model_id_, new.model_id_, self.last_swap_seconds)

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self.poll_seconds if not failures else min(5.0, 0.5 * 2**failures)):
            try:
                self.poll()
                failures = 0
            except Exception:  # noqa: BLE001 - the follower must outlive any one bad poll
                failures += 1
                log.exception("change feed poll failed (%d in a row)", failures)

    def start(self) -> LiveEngine:
        """Follow the change feed in a daemon thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sona-change-feed", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
