"""Versioned adapter storage: one interface, a directory backend and a database backend.

Each version is peft's checkpoint pair (``adapter_config.json`` +
``adapter_model.safetensors``). The directory backend (the default) writes a
version into a hidden temp directory, fsyncs every file and the directory,
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

import json
import os
import re
import shutil
import time
import uuid
from abc import ABC, abstractmethod
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


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


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
        config_json, data = serialize(weights, config)
        created = datetime.now(UTC)
        meta = {
            "user_id": weights.user_id,
            "created_at": created.isoformat(),
            "model_id": weights.model_id,
            "metrics": weights.meta,
        }
        if self.storage is not None:
            _check_current(self.storage, weights)
        user_dir = self.user_dir(weights.user_id)
        try:
            user_dir.mkdir(parents=True, exist_ok=True)
            self._sweep(user_dir)
            tmp = user_dir / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir()
            _write_synced(tmp / CONFIG_FILE, config_json.encode())
            _write_synced(tmp / WEIGHTS_FILE, data)
            _write_synced(tmp / _META_FILE, json.dumps(meta, default=str).encode())
            _fsync_dir(tmp)
            version = max(self.versions(weights.user_id), default=0) + 1
            if self.storage is not None:
                version = max(version, self.storage.next_adapter_version(weights.user_id))
            while True:  # a concurrent writer may take the number first: rename fails, try the next
                target = self.version_dir(weights.user_id, version)
                try:
                    os.rename(tmp, target)
                    break
                except OSError:
                    if not target.exists():
                        raise
                    version += 1
            _fsync_dir(user_dir)
        except OSError as exc:
            raise StorageError(f"cannot save adapter for {weights.user_id!r} in {user_dir}: {exc}") from exc
        if self.storage is not None:
            metrics = {k: float(v) for k, v in weights.meta.items() if isinstance(v, int | float)}
            self.storage.record_adapter(
                weights.user_id, version, rank=weights.rank, size_bytes=len(data) + len(config_json),
                location=str(target), metrics=metrics, created_at=created, model_id=weights.model_id,
            )  # fmt: skip
        self.prune(weights.user_id, config.keep_versions)
        weights.version = version
        return version

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
        times: list[datetime] = []
        if self.storage is not None and (t := self.storage.last_trained_at(user_id)) is not None:
            times.append(t if t.tzinfo else t.replace(tzinfo=UTC))
        for path in (self.user_dir(user_id) / "last_trained.json", *self._latest_meta(user_id)):
            try:
                times.append(datetime.fromisoformat(json.loads(path.read_text())["created_at"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return max(times) if times else None

    def _latest_meta(self, user_id: str) -> list[Path]:
        v = self.latest_version(user_id)
        return [] if v is None else [self.version_dir(user_id, v) / _META_FILE]

    def mark_trained(self, user_id: str, when: datetime) -> None:
        d = self.user_dir(user_id)
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / f".tmp-{uuid.uuid4().hex}.json"
            _write_synced(tmp, json.dumps({"created_at": when.isoformat()}).encode())
            os.replace(tmp, d / "last_trained.json")
        except OSError as exc:
            raise StorageError(f"cannot record training time for {user_id!r}: {exc}") from exc


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
        config_json, data = serialize(weights, config)
        metrics = {k: float(v) for k, v in weights.meta.items() if isinstance(v, int | float)}
        with self.storage.transaction() as tx:  # blob and row commit together or not at all
            _check_current(tx, weights)  # under FOR SHARE: a rollout waits for this commit
            version = tx.next_adapter_version(weights.user_id)
            tx.put_adapter_blob(weights.user_id, version, config_json, data)
            tx.record_adapter(
                weights.user_id, version, rank=weights.rank, size_bytes=len(data) + len(config_json),
                location=f"db://adapter_blobs/{adapter_name(weights.user_id)}/{version}", metrics=metrics,
                model_id=weights.model_id,
            )  # fmt: skip
        self.prune(weights.user_id, config.keep_versions)
        weights.version = version
        return version

    def delete(self, user_id: str, version: int) -> bool:
        return self.storage.delete_adapter(user_id, version)

    def last_trained_at(self, user_id: str) -> datetime | None:
        t = self.storage.last_trained_at(user_id)
        return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC))
