"""Running a per-chunk ranking over many users on worker threads, and the batch result frame."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

__all__ = ["CHUNK", "ranked_frame", "run_chunked", "workers_for"]

#: Users ranked together in one (chunk, n_items) block.
CHUNK = 1024
_COLUMNS = {"user_id": object, "rank": np.int64, "content_id": object, "score": np.float64}


def workers_for(n_users: int, configured: int) -> int:
    """Threads for a batch: ``configured`` (0 = one per CPU core), never more than needed."""
    w = configured or (os.cpu_count() or 1)
    return max(1, min(w, -(-n_users // 256)))


def ranked_frame(
    chunk: Sequence[str],
    top: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    content_ids: npt.NDArray[np.object_],
) -> pd.DataFrame:
    """``user_id, rank, content_id, score`` rows of a (batch, k) ranking; positions < 0 are left out."""
    kk = top.shape[1]
    ok = (top >= 0).ravel()
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.array(chunk, dtype=object), kk)[ok],
            "rank": np.tile(np.arange(1, kk + 1), len(chunk))[ok],
            "content_id": content_ids[np.maximum(top, 0).ravel()][ok],
            "score": scores.ravel()[ok].astype(np.float64),
        }
    )


def run_chunked(
    ids: list[str],
    n_items: int,
    workers: int,
    rank: Callable[[list[str], torch.Tensor], pd.DataFrame],
) -> pd.DataFrame:
    """``rank(chunk, scratch)`` over chunks of ``ids`` on ``workers`` threads, concatenated in order.

    Each worker thread reuses one (chunk, n_items) float32 scratch block
    instead of page-faulting a fresh one per chunk. numpy, scipy and torch
    release the GIL in the heavy parts, so threads do run in parallel.
    """
    size = min(CHUNK, -(-len(ids) // max(workers, 1))) if ids else 1
    chunks = [ids[lo : lo + size] for lo in range(0, len(ids), size)]
    local = threading.local()

    def run(chunk: list[str]) -> pd.DataFrame:
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = torch.empty((size, n_items), dtype=torch.float32)
        return rank(chunk, scratch)

    if workers > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(min(workers, len(chunks)), thread_name_prefix="sona-batch") as pool:
            frames = list(pool.map(run, chunks))
    else:
        frames = [run(c) for c in chunks]
    if not frames:
        return pd.DataFrame({c: [] for c in _COLUMNS}).astype(_COLUMNS)
    return pd.concat(frames, ignore_index=True)
