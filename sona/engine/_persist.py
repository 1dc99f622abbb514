"""The on-disk format of a fitted engine, and the atomic directory write.

A saved engine is one directory:

================  ==========================================================
``engine.json``   format version, config, tower shape, user order, calibration
``catalog.json``  the catalog as records
``history.npz``   every event (profiles are recomputed from it on load)
``model.npz``     content embeddings, item-item weights, priors, cold-start list
``scorer.pt``     the tower scorer's state dict
================  ==========================================================

It is written to a temporary sibling and swapped in with ``os.replace``, so
readers see the old copy or the complete new one, never a half-written one.
``calibration`` is optional: engines saved before it existed load with the
older monotone squash instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
import torch

from sona.catalog import Catalog
from sona.errors import StorageError
from sona.events import EVENT_COLUMNS
from sona.models import PlattScaling, TowerScorer, UserTower
from sona.models._config import SonaConfig

__all__ = ["SavedEngine", "read_engine", "write_atomic", "write_engine"]

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
    #: popularity, trending, cold_order, cold_rank and collab_dense or collab_{data,indices,indptr}
    arrays: Mapping[str, npt.NDArray[Any]]
    calibration: PlattScaling | None


def item_arrays(
    collab: npt.NDArray[np.float32] | sp.csr_matrix, **arrays: npt.NDArray[Any]
) -> dict[str, npt.NDArray[Any]]:
    """``arrays`` plus the item-item weights, dense or as CSR parts."""
    out = dict(arrays)
    if sp.issparse(collab):
        c = collab.tocsr()
        out.update(collab_data=c.data, collab_indices=c.indices, collab_indptr=c.indptr)
    else:
        out["collab_dense"] = np.asarray(collab)
    return out


def write_atomic(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a fresh sibling directory, fsync its files and swap it in as ``directory``."""
    target = Path(directory).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(f"could not save engine to {target}: {exc}") from exc
    return target


def write_engine(directory: str | Path, saved: SavedEngine) -> Path:
    """Write ``saved`` atomically to ``directory``; returns the resolved path."""

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
        (d / "catalog.json").write_text(saved.catalog.to_frame().to_json(orient="records"))

    return write_atomic(directory, write)


def read_engine(directory: str | Path) -> SavedEngine:
    """Read a directory written by :func:`write_engine`.

    Raises
    ------
    StorageError
        The directory is missing, incomplete or from an incompatible version.
    """
    d = Path(directory).expanduser()
    try:
        meta = json.loads((d / "engine.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise StorageError(f"{d}: unsupported engine format {meta.get('format_version')!r}")
        catalog = Catalog.from_frame(pd.read_json(d / "catalog.json", orient="records", dtype=False))
        hist = np.load(d / "history.npz", allow_pickle=False)
        model = dict(np.load(d / "model.npz", allow_pickle=False))
        state = torch.load(d / "scorer.pt", weights_only=True)
        calib = meta.get("calibration")
        calibration = (
            None if calib is None else PlattScaling(float(calib["slope"]), float(calib["intercept"]))
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise StorageError(f"cannot load a Sona engine from {d}: {exc}") from exc
    frame = pd.DataFrame({c: hist[c].astype(object) for c in _TEXT_COLUMNS})
    frame["timestamp"] = pd.to_datetime(hist["timestamp_ns"], unit="ns", utc=True)
    for c in _VALUE_COLUMNS:
        frame[c] = hist[c]
    t = meta["tower"]
    scorer = TowerScorer(UserTower(t["in_dim"], t["hidden_dim"], t["out_dim"]), len(catalog), t["out_dim"])
    scorer.load_state_dict(state)
    scorer.eval()
    for p in scorer.parameters():
        p.requires_grad_(False)
    return SavedEngine(
        catalog=catalog,
        config=SonaConfig(**meta["config"]),
        history=frame[list(EVENT_COLUMNS)],
        users=np.array(meta["users"], dtype=object),
        content_embeddings=model.pop("content_embeddings"),
        scorer=scorer,
        arrays=model,
        calibration=calibration,
    )
