"""The on-disk format of a fitted engine, and the atomic directory write.

A saved engine is one directory:

================  ==========================================================
``engine.json``   format version, model id, config, tower shape, user order, calibration
``catalog.json``  the catalog as records
``history.npz``   every event (profiles are recomputed from it on load)
``model.npz``     content embeddings, item-item weights, sequential transitions, priors,
                  cold-start list
``scorer.pt``     the tower scorer's state dict
================  ==========================================================

It is written to a temporary sibling and swapped in with ``os.replace``, so
readers see the old copy or the complete new one, never a half-written one.
``calibration`` is optional: engines saved before it existed load with the
older monotone squash instead. So are the sequential source's transitions
(``transitions_{data,indices,indptr}``): engines saved before they were part of
the model rebuild them from the saved history on load, as those releases did.

The **model id** is a content hash of the frozen model (config, catalog,
content embeddings, item tables and transitions, tower weights, calibration), not of the event
history: it names the base model that adapters are trained on, so an adapter is
attached only to the model it was trained for (see :func:`model_id_of`). Engines
saved before it existed get it computed on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
import torch

from sona.catalog import Catalog
from sona.errors import SonaError, StorageError
from sona.events import EVENT_COLUMNS
from sona.models import PlattScaling, TowerScorer, UserTower
from sona.models._config import SonaConfig

__all__ = [
    "SavedEngine",
    "model_id_of",
    "pack_engine",
    "read_engine",
    "read_model_id",
    "saved_csr",
    "unpack_engine",
    "write_atomic",
    "write_engine",
]

logger = logging.getLogger("sona.engine")

_T = TypeVar("_T")

FORMAT_VERSION = 1
_TEXT_COLUMNS = ("event_id", "user_id", "content_id", "source")
_VALUE_COLUMNS = ("completion_rate", "watch_seconds", "rating", "dismissed", "is_rewatch")


@dataclass(slots=True)
class SavedEngine:
    """Everything a saved engine holds; the rest of the state is derived on load."""

    catalog: Catalog
    config: SonaConfig
    history: pd.DataFrame
    users: npt.NDArray[np.object_]
    content_embeddings: npt.NDArray[np.float32]
    scorer: TowerScorer
    #: popularity, trending, cold_order, cold_rank, collab_dense or collab_{data,indices,indptr},
    #: and transitions_{data,indices,indptr} (absent in engines saved before they were frozen)
    arrays: Mapping[str, npt.NDArray[Any]]
    calibration: PlattScaling | None
    #: Content hash of the frozen model; computed by ``write_engine`` when None.
    model_id: str | None = None


def _catalog_json(catalog: Catalog) -> str:
    return json.dumps(catalog.to_frame().to_dict("records"), default=_json_scalar)


def model_id_of(
    *,
    catalog: Catalog,
    config: SonaConfig,
    content_embeddings: npt.NDArray[Any],
    arrays: Mapping[str, npt.NDArray[Any]],
    scorer: TowerScorer,
    calibration: PlattScaling | None,
) -> str:
    """Content hash (sha256, 32 hex digits) of everything that makes the frozen model score as it does.

    The event history is user state, not model: observing events never changes the id,
    refitting always does (new weights), so adapters can tell which base they belong to.
    """
    h = hashlib.sha256()

    def put(name: str, data: bytes) -> None:
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)

    def put_array(name: str, a: npt.NDArray[Any]) -> None:
        a = np.ascontiguousarray(a)
        put(name, f"{a.dtype.str}{a.shape}".encode() + a.tobytes())

    put("config", json.dumps(asdict(config), sort_keys=True, default=str).encode())
    put("catalog", _catalog_json(catalog).encode())
    put_array("content_embeddings", np.asarray(content_embeddings))
    for name in sorted(arrays):
        put_array(f"model/{name}", np.asarray(arrays[name]))
    for name, t in sorted(scorer.state_dict().items()):
        put_array(f"scorer/{name}", t.detach().cpu().numpy())
    put("calibration", json.dumps(None if calibration is None else calibration.to_dict()).encode())
    return h.hexdigest()[:32]


def _saved_model_id(saved: SavedEngine) -> str:
    return saved.model_id or model_id_of(
        catalog=saved.catalog,
        config=saved.config,
        content_embeddings=saved.content_embeddings,
        arrays=saved.arrays,
        scorer=saved.scorer,
        calibration=saved.calibration,
    )


def item_arrays(
    collab: npt.NDArray[np.float32] | sp.csr_matrix,
    transitions: sp.csr_matrix,
    **arrays: npt.NDArray[Any],
) -> dict[str, npt.NDArray[Any]]:
    """``arrays`` plus the item-item weights (dense or as CSR parts) and the transitions' CSR parts."""
    out = dict(arrays)
    if sp.issparse(collab):
        out.update(_csr_parts("collab", collab))
    else:
        out["collab_dense"] = np.asarray(collab)
    out.update(_csr_parts("transitions", transitions))
    return out


def _csr_parts(name: str, m: sp.spmatrix) -> dict[str, npt.NDArray[Any]]:
    c = m.tocsr()
    return {f"{name}_data": c.data, f"{name}_indices": c.indices, f"{name}_indptr": c.indptr}


def saved_csr(arrays: Mapping[str, npt.NDArray[Any]], name: str, n_items: int) -> sp.csr_matrix | None:
    """The (n_items, n_items) CSR matrix saved as ``{name}_{data,indices,indptr}``; None if not saved."""
    if f"{name}_data" not in arrays:
        return None
    return sp.csr_matrix(
        (arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
        shape=(n_items, n_items),
    )


def _fsync_dir(path: Path) -> None:
    """Make the directory's entries (a rename into or out of it) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a fresh sibling directory, fsync its files and swap it in as ``directory``.

    An existing copy is moved aside for the swap and moved back when the swap fails, so
    ``directory`` ends up the complete old or new copy. Any ``OSError`` (also creating the
    parent) becomes :class:`StorageError`; the temporary directory never outlives the call.
    """
    target = Path(directory).expanduser().resolve()
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        write(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if old is not None:
                try:
                    os.replace(old, target)
                except OSError as again:
                    raise StorageError(
                        f"could not save engine to {target}: {exc}; the previous copy is in {old} "
                        f"and could not be moved back: {again}"
                    ) from exc
            raise
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise StorageError(f"could not save engine to {target}: {exc}") from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap
    return target


def _json_scalar(value: object) -> object:
    """numpy scalars and dates in catalog metadata, as JSON has them; anything else is refused."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_engine(directory: str | Path, saved: SavedEngine) -> Path:
    """Write ``saved`` atomically to ``directory``; returns the resolved path."""
    try:  # before any file: unserializable catalog metadata fails here, not half-way through
        catalog_json = _catalog_json(saved.catalog)
    except (TypeError, ValueError) as exc:
        raise StorageError(
            f"could not save engine to {directory}: catalog metadata is not JSON: {exc}"
        ) from exc
    model_id = _saved_model_id(saved)

    def write(d: Path) -> None:
        h = saved.history
        np.savez(
            d / "history.npz",
            **{c: h[c].to_numpy(dtype=str) for c in _TEXT_COLUMNS},
            timestamp_ns=h["timestamp"].astype("int64").to_numpy(),
            **{c: h[c].to_numpy() for c in _VALUE_COLUMNS},
        )
        np.savez(d / "model.npz", content_embeddings=saved.content_embeddings, **saved.arrays)
        torch.save(saved.scorer.state_dict(), d / "scorer.pt")
        tower = saved.scorer.tower
        meta = {
            "format_version": FORMAT_VERSION,
            "model_id": model_id,
            "config": asdict(saved.config),
            "tower": {
                "in_dim": tower.fc1.in_features,
                "hidden_dim": tower.fc1.out_features,
                "out_dim": tower.fc2.out_features,
            },
            "users": [str(u) for u in saved.users],
        }
        if saved.calibration is not None:
            meta["calibration"] = saved.calibration.to_dict()
        (d / "engine.json").write_text(json.dumps(meta))
        (d / "catalog.json").write_text(catalog_json)  # stdlib json: floats round-trip exactly

    return write_atomic(directory, write)


#: What a damaged or foreign file raises while it is parsed (``SonaError``: a catalog that fails validation).
_UNREADABLE = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    RuntimeError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    SonaError,
)


def _read(path: Path, parse: Callable[[Path], _T]) -> _T:
    """``parse(path)``, with anything a damaged file raises turned into a :class:`StorageError` naming it."""
    try:
        return parse(path)
    except StorageError:
        raise
    except _UNREADABLE as exc:
        raise StorageError(f"cannot load a Sona engine from {path.parent}: {path.name}: {exc}") from exc


def _broken(path: Path, reason: str) -> StorageError:
    return StorageError(f"cannot load a Sona engine from {path.parent}: {path.name}: {reason}")


def _meta(path: Path) -> dict[str, Any]:
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise _broken(path, f"unsupported engine format {meta.get('format_version')!r}")
    calib = meta.get("calibration")
    model_id = meta.get("model_id")
    return {
        "model_id": str(model_id) if model_id else None,
        "config": _config(path, meta["config"]),
        "tower": {k: int(meta["tower"][k]) for k in ("in_dim", "hidden_dim", "out_dim")},
        "users": np.array([str(u) for u in meta["users"]], dtype=object),
        "calibration": (
            None if calib is None else PlattScaling(float(calib["slope"]), float(calib["intercept"]))
        ),
    }


def _config(path: Path, saved: dict[str, Any]) -> SonaConfig:
    """The saved config; settings a later release dropped are ignored (with a warning), not fatal."""
    known = {f.name for f in fields(SonaConfig)}
    dropped = sorted(set(saved) - known)
    if dropped:
        logger.warning("%s: ignoring settings this release no longer has: %s", path, ", ".join(dropped))
    return SonaConfig(**{k: v for k, v in saved.items() if k in known})


def _catalog(path: Path) -> Catalog:
    return Catalog.from_frame(pd.DataFrame.from_records(json.loads(path.read_text())))


def _history(path: Path) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as hist:  # members are read lazily: all of them, here
        frame = pd.DataFrame({c: hist[c].astype(object) for c in _TEXT_COLUMNS})
        frame["timestamp"] = pd.to_datetime(hist["timestamp_ns"], unit="ns", utc=True)
        for c in _VALUE_COLUMNS:
            frame[c] = hist[c]
    return frame[list(EVENT_COLUMNS)]


def _arrays(path: Path) -> dict[str, npt.NDArray[Any]]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _scorer(path: Path, tower: Mapping[str, int], n_items: int) -> TowerScorer:
    state = torch.load(path, weights_only=True)
    scorer = TowerScorer(
        UserTower(tower["in_dim"], tower["hidden_dim"], tower["out_dim"]), n_items, tower["out_dim"]
    )
    scorer.load_state_dict(state)
    scorer.eval()
    for p in scorer.parameters():
        p.requires_grad_(False)
    return scorer


def _check_model(path: Path, model: Mapping[str, npt.NDArray[Any]], n_items: int) -> None:
    """The item arrays have one entry per title (the catalog's), and the item-item weights are whole."""
    emb = model.get("content_embeddings")
    if emb is None or emb.ndim != 2 or emb.shape[0] != n_items:
        raise _broken(path, f"content_embeddings must have {n_items} rows")
    for name in ("popularity", "trending", "cold_order", "cold_rank"):
        if name not in model or model[name].shape != (n_items,):
            raise _broken(path, f"{name} must have {n_items} entries")
    if "collab_dense" in model:
        if model["collab_dense"].shape != (n_items, n_items):
            raise _broken(path, f"collab_dense must be {n_items} x {n_items}")
    else:
        _check_csr(path, model, "collab", n_items, required=True)
    _check_csr(path, model, "transitions", n_items, required=False)  # earlier releases rebuilt them


def _check_csr(
    path: Path, model: Mapping[str, npt.NDArray[Any]], name: str, n_items: int, *, required: bool
) -> None:
    """``{name}_{data,indices,indptr}`` form a valid CSR; all absent is fine when not ``required``."""
    parts = [f"{name}_{p}" for p in ("data", "indices", "indptr")]
    present = [p for p in parts if p in model]
    if not present and not required:
        return
    if len(present) != len(parts):
        raise _broken(path, f"{name} needs all of {', '.join(parts)}")
    data, indices, indptr = (model[p] for p in parts)
    sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items)).check_format(full_check=True)


def read_engine(directory: str | Path) -> SavedEngine:
    """Read a directory written by :func:`write_engine`.

    Every file is read and checked against the others here, so a damaged copy
    fails now and with the file's name, not later inside the engine.

    Raises
    ------
    StorageError
        The directory is missing, incomplete, damaged or from an incompatible version.
    """
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise StorageError(f"cannot load a Sona engine from {d}: no such directory")
    meta = _read(d / "engine.json", _meta)
    catalog = _read(d / "catalog.json", _catalog)
    history = _read(d / "history.npz", _history)
    users = meta["users"]
    if len(set(users)) != len(users) or not set(history["user_id"]) <= set(users):
        raise _broken(d / "engine.json", "its user list does not match the users of history.npz")
    if (catalog.lookup(history["content_id"]) < 0).any():
        raise _broken(d / "history.npz", "it names titles missing from catalog.json")
    model = _read(d / "model.npz", _arrays)
    _read(d / "model.npz", lambda p: _check_model(p, model, len(catalog)))
    scorer = _read(d / "scorer.pt", lambda p: _scorer(p, meta["tower"], len(catalog)))
    saved = SavedEngine(
        catalog=catalog,
        config=meta["config"],
        history=history,
        users=users,
        content_embeddings=model.pop("content_embeddings"),
        scorer=scorer,
        arrays=model,
        calibration=meta["calibration"],
        model_id=meta["model_id"],
    )
    saved.model_id = _saved_model_id(saved)  # engines saved before model ids: computed now
    return saved


def read_model_id(directory: str | Path) -> str | None:
    """The model id recorded in a saved engine's ``engine.json`` (None if absent or unreadable)."""
    try:
        meta = json.loads((Path(directory) / "engine.json").read_text())
    except (OSError, ValueError):
        return None
    model_id = meta.get("model_id") if isinstance(meta, dict) else None
    return str(model_id) if model_id else None


#: The files of a saved engine, in archive order.
_FILES = ("engine.json", "catalog.json", "history.npz", "model.npz", "scorer.pt")


def pack_engine(directory: str | Path) -> bytes:
    """A saved engine directory as one zip archive (stored, not compressed: the arrays barely shrink)."""
    d = Path(directory)
    buf = io.BytesIO()
    try:
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in _FILES:
                zf.write(d / name, arcname=name)
    except OSError as exc:
        raise StorageError(f"cannot pack the engine in {d}: {exc}") from exc
    return buf.getvalue()


def unpack_engine(archive: bytes, directory: str | Path) -> Path:
    """Write an archive made by :func:`pack_engine` to ``directory`` atomically; returns its path."""

    def write(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(io.BytesIO(archive)) as zf:
                names = set(zf.namelist())
                if names != set(_FILES):
                    raise StorageError(f"not a sona engine archive: it holds {sorted(names)}")
                for name in _FILES:
                    (tmp / name).write_bytes(zf.read(name))
        except zipfile.BadZipFile as exc:
            raise StorageError(f"not a sona engine archive: {exc}") from exc

    return write_atomic(directory, write)
