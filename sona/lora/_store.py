"""Versioned adapter storage: one interface, a directory backend and a database backend.

Each version is peft's checkpoint pair (``adapter_config.json`` +
``adapter_model.safetensors``). The directory backend (the default) writes a
version into a hidden temp directory, flushes it to disk (one ``syncfs`` of
the file system for a whole batch, else an fsync of every file and directory),
then renames it to ``v000042``: the rename is atomic, so a crash mid-save
never leaves a readable half adapter, and leftovers of a killed writer are
ignored by readers and swept by the next save. The database backend keeps the
same two payloads in ``adapter_blobs`` (BLOB/BYTEA) and writes blob and
``lora_adapters`` row in one transaction, so several serving machines share
adapters through PostgreSQL.

Adapters belong to a base model: each version records the model id it was
trained on (checkpoint metadata, ``lora_adapters.model_id``). A store with a
database refuses (:class:`StaleModelError`) to save an adapter trained on a
model that is no longer the current one, so a replica still serving the old
model never publishes adapters for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sona.errors import AdapterCorruptError, StorageError, UnknownUserError
from sona.lora._names import adapter_name
from sona.lora.config import UserAdapterConfig
from sona.lora.layer import AdapterWeights, deserialize, serialize

if TYPE_CHECKING:  # the database backend takes a Storage; sona.storage is imported only for typing
    from sona.storage import Storage

__all__ = ["AdapterStore", "DatabaseAdapterStore", "DirectoryAdapterStore", "StaleModelError"]

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_META_FILE = "sona_meta.json"
_VERSION = re.compile(r"^v(\d{6,})$")
_STALE_TMP_SECONDS = 60.0


class StaleModelError(StorageError):
    """An adapter was trained on a base model that is not the current one; nothing was stored."""

    def __init__(self, user_id: str, model_id: str, current: str) -> None:
        super().__init__(
            f"adapter for {user_id!r} was trained on model {model_id} but the current model is {current}; "
            "not stored (retrain on the current model)"
        )
        self.user_id = user_id
        self.model_id = model_id
        self.current_model_id = current


def _check_current(storage: Storage, weights: AdapterWeights) -> None:
    """Raise :class:`StaleModelError` when a rollout has moved past the adapter's base model."""
    if weights.model_id is None:
        return
    current = storage.current_model_id(lock=True)
    if current is not None and current != weights.model_id:
        raise StaleModelError(weights.user_id, weights.model_id, current)


def _check_models(storage: Storage, items: Sequence[AdapterWeights]) -> None:
    """:func:`_check_current` once per distinct base model among ``items``."""
    for model_id in dict.fromkeys(w.model_id for w in items if w.model_id):
        _check_current(storage, next(w for w in items if w.model_id == model_id))


def _metrics(weights: AdapterWeights) -> dict[str, float]:
    """The numeric training metrics recorded in ``lora_adapters``."""
    return {k: float(v) for k, v in weights.meta.items() if isinstance(v, int | float)}


class AdapterStore(ABC):
    """Where adapter versions live. ``load`` is strict; callers decide about fallback."""

    @abstractmethod
    def save(self, weights: AdapterWeights, config: UserAdapterConfig) -> int:
        """Store a new version and prune to ``config.keep_versions``; return its number."""

    @abstractmethod
    def versions(self, user_id: str) -> list[int]:
        """Stored versions, oldest first."""

    @abstractmethod
    def _read(self, user_id: str, version: int) -> tuple[str | bytes, bytes]:
        """``(config_json, safetensors bytes)``; AdapterCorruptError if missing or unreadable."""

    @abstractmethod
    def delete(self, user_id: str, version: int) -> bool:
        """Remove one version; True if it existed."""

    @abstractmethod
    def last_trained_at(self, user_id: str) -> datetime | None:
        """When the user was last trained (for the minimum-interval guard)."""

    def mark_trained(self, user_id: str, when: datetime) -> None:  # noqa: B027 - optional hook
        """Record a training that kept no adapter (it still counts for the interval guard)."""

    def last_trained_many(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        """:meth:`last_trained_at` of many users (those never trained are absent).

        The interval guard asks for every user of a chunk; backends answer with one query.
        """
        return {u: t for u in user_ids if (t := self.last_trained_at(u)) is not None}

    def save_many(
        self, items: Sequence[AdapterWeights], config: UserAdapterConfig
    ) -> list[int | StorageError]:
        """:meth:`save` of every item; per item, its new version or the error that kept it out.

        A training job stores thousands of adapters: backends override this to make
        them durable together (one flush, one transaction) instead of one by one.
        """
        out: list[int | StorageError] = []
        for w in items:
            try:
                out.append(self.save(w, config))
            except StorageError as exc:
                out.append(exc)
        return out

    def mark_trained_many(self, user_ids: Sequence[str], when: datetime) -> list[StorageError | None]:
        """:meth:`mark_trained` of every user; per user, None or the error."""
        out: list[StorageError | None] = []
        for u in user_ids:
            try:
                self.mark_trained(u, when)
                out.append(None)
            except StorageError as exc:
                out.append(exc)
        return out

    def load(self, user_id: str, version: int | None = None) -> AdapterWeights:
        """Read one version (default: the latest).

        Raises
        ------
        UnknownUserError
            The user has no stored adapter (or not that version).
        AdapterCorruptError
            The files are missing, truncated or inconsistent.
        """
        stored = self.versions(user_id)
        if not stored or (version is not None and version not in stored):
            raise UnknownUserError(user_id)
        v = stored[-1] if version is None else version
        config_json, data = self._read(user_id, v)
        return deserialize(user_id, v, config_json, data)

    def latest_version(self, user_id: str) -> int | None:
        stored = self.versions(user_id)
        return stored[-1] if stored else None

    def rollback(self, user_id: str) -> int | None:
        """Drop the latest version so the previous one serves; return the version now current."""
        stored = self.versions(user_id)
        if not stored:
            raise UnknownUserError(user_id)
        self.delete(user_id, stored[-1])
        return stored[-2] if len(stored) > 1 else None

    def prune(self, user_id: str, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` versions; return the deleted ones."""
        old = self.versions(user_id)[:-keep] if keep > 0 else self.versions(user_id)
        for v in old:
            self.delete(user_id, v)
        return old


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs_call() -> Callable[[int], int] | None:
    """Linux's ``syncfs(2)``, or None where the C library has none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn  # type: ignore[no-any-return]


_SYNCFS = _syncfs_call()


def _flush(root: Path, files: Sequence[Path], dirs: Sequence[Path]) -> None:
    """Make ``files`` and the entries of ``dirs`` durable, all at once.

    One ``syncfs`` of the store's file system costs what one ``fsync`` does, where a
    chunk of adapters is hundreds of files and directories (about 3 ms each here).
    Elsewhere every file and directory is fsynced.
    """
    if _SYNCFS is not None:
        fd = os.open(root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs: {os.strerror(err)}")
        finally:
            os.close(fd)
        return
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in dirs:
        _fsync_dir(d)


class DirectoryAdapterStore(AdapterStore):
    """Adapters under ``root/<adapter_name(user)>/v000001/`` (peft files + a small meta file).

    With ``storage`` given, every saved version also gets a ``lora_adapters`` row
    (location = the version directory); the directory stays the source of truth.
    """

    def __init__(self, root: str | Path, *, storage: Storage | None = None) -> None:
        self.root = Path(root)
        self.storage = storage

    def __repr__(self) -> str:
        return f"DirectoryAdapterStore({str(self.root)!r})"

    def user_dir(self, user_id: str) -> Path:
        return self.root / adapter_name(user_id)

    def version_dir(self, user_id: str, version: int) -> Path:
        return self.user_dir(user_id) / f"v{version:06d}"

    def versions(self, user_id: str) -> list[int]:
        d = self.user_dir(user_id)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot list adapters in {d}: {exc}") from exc
        return sorted(int(m.group(1)) for n in names if (m := _VERSION.match(n)))

    def _read(self, user_id: str, version: int) -> tuple[str | bytes, bytes]:
        d = self.version_dir(user_id, version)
        try:
            return (d / CONFIG_FILE).read_bytes(), (d / WEIGHTS_FILE).read_bytes()
        except OSError as exc:
            raise AdapterCorruptError(user_id, version, f"cannot read {d}: {exc}") from exc

    def _sweep(self, user_dir: Path) -> None:
        """Remove temp directories left by killed writers (old enough not to be in flight)."""
        now = time.time()
        for p in user_dir.glob(".tmp-*"):
            try:
                if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                continue

    def save(self, weights: AdapterWeights, config: UserAdapterConfig) -> int:
        got = self.save_many([weights], config)[0]
        if isinstance(got, StorageError):
            raise got
        return got

    def save_many(
        self, items: Sequence[AdapterWeights], config: UserAdapterConfig
    ) -> list[int | StorageError]:
        """:meth:`save` for many users with two file-system flushes in all (see :func:`_flush`).

        Temp directories, flush, renames, flush, then the ``lora_adapters`` rows: each
        step done for every item before the next, so a crash leaves only whole
        versions or ignored temp directories. :meth:`save` is a batch of one.
        """
        out: list[int | StorageError | None] = [None] * len(items)
        if self.storage is not None:
            try:
                _check_models(self.storage, items)
            except StorageError as exc:
                return [exc] * len(items)
        created = datetime.now(UTC)
        staged: list[tuple[int, Path, str, bytes]] = []
        files: list[Path] = []
        for i, w in enumerate(items):
            config_json, data = serialize(w, config)
            meta = {"user_id": w.user_id, "created_at": created.isoformat(), "model_id": w.model_id,
                    "metrics": w.meta}  # fmt: skip
            user_dir = self.user_dir(w.user_id)
            try:
                user_dir.mkdir(parents=True, exist_ok=True)
                self._sweep(user_dir)
                tmp = user_dir / f".tmp-{uuid.uuid4().hex}"
                tmp.mkdir()
                for name, payload in ((CONFIG_FILE, config_json.encode()), (WEIGHTS_FILE, data),
                                      (_META_FILE, json.dumps(meta, default=str).encode())):  # fmt: skip
                    (tmp / name).write_bytes(payload)
                    files.append(tmp / name)
            except OSError as exc:
                out[i] = StorageError(f"cannot save adapter for {w.user_id!r} in {user_dir}: {exc}")
                continue
            staged.append((i, tmp, config_json, data))
        try:
            _flush(self.root, files, [t for _, t, _, _ in staged])
            moved: list[tuple[int, Path, str, bytes]] = []
            for i, tmp, config_json, data in staged:
                w = items[i]
                version = max(self.versions(w.user_id), default=0) + 1
                if self.storage is not None:
                    version = max(version, self.storage.next_adapter_version(w.user_id))
                out[i] = version = self._rename(tmp, w.user_id, version)
                moved.append((i, self.version_dir(w.user_id, version), config_json, data))
            _flush(self.root, [], [self.user_dir(items[i].user_id) for i, _, _, _ in moved])
        except OSError as exc:
            err = StorageError(f"cannot save adapters in {self.root}: {exc}")
            return [err if o is None or isinstance(o, int) else o for o in out]
        if self.storage is not None:
            try:
                with self.storage.transaction() as tx:
                    for i, target, config_json, data in moved:
                        w = items[i]
                        tx.record_adapter(
                            w.user_id, int(out[i]), rank=w.rank,  # type: ignore[arg-type]
                            size_bytes=len(data) + len(config_json), location=str(target),
                            metrics=_metrics(w), created_at=created, model_id=w.model_id,
                        )  # fmt: skip
            except StorageError as exc:
                return [exc if isinstance(o, int) else o for o in out]  # type: ignore[misc]
        for i, _, _, _ in moved:
            items[i].version = int(out[i])  # type: ignore[arg-type]
            with contextlib.suppress(StorageError):  # stored; old versions go at the next save
                self.prune(items[i].user_id, config.keep_versions)
        return out  # type: ignore[return-value]

    def _rename(self, tmp: Path, user_id: str, version: int) -> int:
        """Move a flushed temp directory to the first free version number from ``version``."""
        while True:  # a concurrent writer may take the number first: rename fails, try the next
            target = self.version_dir(user_id, version)
            try:
                os.rename(tmp, target)
                return version
            except OSError:
                if not target.exists():
                    raise
                version += 1

    def mark_trained_many(self, user_ids: Sequence[str], when: datetime) -> list[StorageError | None]:
        out: list[StorageError | None] = [None] * len(user_ids)
        staged: list[tuple[int, Path]] = []
        payload = json.dumps({"created_at": when.isoformat()}).encode()
        for i, u in enumerate(user_ids):
            d = self.user_dir(u)
            try:
                d.mkdir(parents=True, exist_ok=True)
                tmp = d / f".tmp-{uuid.uuid4().hex}.json"
                tmp.write_bytes(payload)
                staged.append((i, tmp))
            except OSError as exc:
                out[i] = StorageError(f"cannot record training time for {u!r}: {exc}")
        try:
            _flush(self.root, [t for _, t in staged], [])
            for _, tmp in staged:
                os.replace(tmp, tmp.parent / "last_trained.json")
        except OSError as exc:
            err = StorageError(f"cannot record training times in {self.root}: {exc}")
            return [o or err for o in out]
        return out

    def delete(self, user_id: str, version: int) -> bool:
        d = self.version_dir(user_id, version)
        existed = d.exists()
        if existed:  # rename first so readers never see a half-deleted version
            trash = d.parent / f".tmp-del-{uuid.uuid4().hex}"
            try:
                os.rename(d, trash)
            except OSError as exc:
                raise StorageError(f"cannot delete {d}: {exc}") from exc
            shutil.rmtree(trash, ignore_errors=True)
        if self.storage is not None:
            existed = self.storage.delete_adapter(user_id, version) or existed
        return existed

    def last_trained_at(self, user_id: str) -> datetime | None:
        return self.last_trained_many([user_id]).get(user_id)

    def last_trained_many(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        recorded = {} if self.storage is None else self.storage.last_trained_times(list(user_ids))
        out: dict[str, datetime] = {}
        for u in user_ids:
            t = recorded.get(u)
            times = [] if t is None else [t if t.tzinfo else t.replace(tzinfo=UTC)]
            times += self._file_times(u)
            if times:
                out[u] = max(times)
        return out

    def _file_times(self, user_id: str) -> list[datetime]:
        times: list[datetime] = []
        for path in (self.user_dir(user_id) / "last_trained.json", *self._latest_meta(user_id)):
            try:
                times.append(datetime.fromisoformat(json.loads(path.read_text())["created_at"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return times

    def _latest_meta(self, user_id: str) -> list[Path]:
        v = self.latest_version(user_id)
        return [] if v is None else [self.version_dir(user_id, v) / _META_FILE]

    def mark_trained(self, user_id: str, when: datetime) -> None:
        if (err := self.mark_trained_many([user_id], when)[0]) is not None:
            raise err


class DatabaseAdapterStore(AdapterStore):
    """Adapters as rows: safetensors bytes in ``adapter_blobs``, one ``lora_adapters`` row per version."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def __repr__(self) -> str:
        return f"DatabaseAdapterStore({self.storage!r})"

    def versions(self, user_id: str) -> list[int]:
        return [r.version for r in self.storage.list_adapters(user_id)]

    def _read(self, user_id: str, version: int) -> tuple[str | bytes, bytes]:
        blob = self.storage.get_adapter_blob(user_id, version)
        if blob is None:
            raise AdapterCorruptError(user_id, version, "the adapter's blob is missing from the database")
        return blob

    def save(self, weights: AdapterWeights, config: UserAdapterConfig) -> int:
        payload = [serialize(weights, config)]
        with self.storage.transaction() as tx:  # blob and row commit together or not at all
            version = self._insert(tx, [weights], payload)[0]
        self.prune(weights.user_id, config.keep_versions)
        weights.version = version
        return version

    def save_many(
        self, items: Sequence[AdapterWeights], config: UserAdapterConfig
    ) -> list[int | StorageError]:
        """:meth:`save` for many users in one transaction (one commit to wait for, not one each).

        If the transaction fails, each item is tried on its own so the error lands on
        the users it belongs to.
        """
        payloads = [serialize(w, config) for w in items]
        try:
            with self.storage.transaction() as tx:
                versions = self._insert(tx, items, payloads)
        except StaleModelError as exc:
            return [exc] * len(items)
        except StorageError:
            return super().save_many(items, config)
        for w, version in zip(items, versions, strict=True):
            w.version = version
            with contextlib.suppress(StorageError):  # stored; old versions go at the next save
                self.prune(w.user_id, config.keep_versions)
        return list(versions)

    @staticmethod
    def _insert(
        tx: Storage, items: Sequence[AdapterWeights], payloads: Sequence[tuple[str, bytes]]
    ) -> list[int]:
        """Blob and ``lora_adapters`` row of every item inside ``tx``; their versions.

        The base-model check runs under FOR SHARE: a rollout waits for this commit.
        """
        _check_models(tx, items)
        versions: list[int] = []
        for w, (config_json, data) in zip(items, payloads, strict=True):
            version = tx.next_adapter_version(w.user_id)
            tx.put_adapter_blob(w.user_id, version, config_json, data)
            tx.record_adapter(
                w.user_id, version, rank=w.rank, size_bytes=len(data) + len(config_json),
                location=f"db://adapter_blobs/{adapter_name(w.user_id)}/{version}",
                metrics=_metrics(w), model_id=w.model_id,
            )  # fmt: skip
            versions.append(version)
        return versions

    def delete(self, user_id: str, version: int) -> bool:
        return self.storage.delete_adapter(user_id, version)

    def last_trained_at(self, user_id: str) -> datetime | None:
        t = self.storage.last_trained_at(user_id)
        return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC))

    def last_trained_many(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        times = self.storage.last_trained_times(list(user_ids))
        return {u: t if t.tzinfo else t.replace(tzinfo=UTC) for u, t in times.items()}
