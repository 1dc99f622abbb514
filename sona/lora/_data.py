"""Turn users' events into a :class:`~sona.lora._training.TrainingSet`, vectorized.

Each user's qualifying events (engagement weight > 0), in time order, are cut
in three: the oldest part is the *context* (the profile the adapter sees), the
next ``target_fraction`` are the *targets* (what the adapter learns to
predict: the user's drift), and the last ``holdout_fraction`` is the held-out
*tail* that decides early stopping and acceptance. Non-qualifying events
(dismissals, abandoned views) never become positives or negatives; they join
the profile of the part they fall in by time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from sona.lora._training import TrainingSet
from sona.lora.config import UserAdapterConfig

__all__ = ["InputBuilder", "build_training_set", "qualifying_counts"]

#: Builds tower inputs (len(user_ids), in_dim) from an events frame that has
#: ``user_id``, ``content_id``, ``timestamp`` and ``weight`` columns. Users with
#: no rows get their empty-history input. It may also return the fixed part of
#: the served score, ``(inputs, offsets (n, n_items))``, to train on the fusion.
InputBuilder = Callable[[pd.DataFrame, list[str]], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]


def qualifying_counts(events: pd.DataFrame, user_ids: Sequence[str]) -> npt.NDArray[np.int64]:
    """Qualifying events (weight > 0) per user, aligned with ``user_ids``."""
    counts = events.loc[events["weight"] > 0].groupby("user_id", sort=False).size()
    return counts.reindex(pd.Index(list(user_ids), dtype=object), fill_value=0).to_numpy(dtype=np.int64)


def _pad(rows: np.ndarray, values: np.ndarray, n_rows: int, fill: float, dtype: torch.dtype) -> torch.Tensor:
    """Scatter ``values`` grouped by sorted ``rows`` into an (n_rows, max_count) padded tensor."""
    if len(rows) == 0:
        return torch.full((n_rows, 1), fill, dtype=dtype)
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(rows)) - starts[rows]
    out = np.full((n_rows, max(1, int(counts.max()))), fill, dtype=np.float64)
    out[rows, col] = values
    return torch.as_tensor(out).to(dtype)


def _mask(rows: np.ndarray, items: np.ndarray, n_rows: int, n_items: int) -> torch.Tensor:
    m = torch.zeros(n_rows, n_items, dtype=torch.bool)
    m[torch.tensor(np.asarray(rows, dtype=np.int64)), torch.tensor(np.asarray(items, dtype=np.int64))] = True
    return m


def _split(
    built: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(built, tuple):
        return built[0].to(torch.float32), built[1].to(torch.float32)
    return built.to(torch.float32), None


def build_training_set(
    events: pd.DataFrame,
    user_ids: Sequence[str],
    n_items: int,
    config: UserAdapterConfig,
    inputs: InputBuilder,
    *,
    tower_weight: float = 1.0,
) -> TrainingSet:
    """Split each user's events into context / targets / tail and tensorize.

    ``events`` needs ``user_id``, ``item`` (int index into the scorer's items),
    ``content_id``, ``timestamp`` and ``weight``. Every user in ``user_ids`` must
    have at least 3 qualifying events (callers enforce ``min_events`` first).
    """
    users = list(user_ids)
    row_of = pd.Series(np.arange(len(users)), index=pd.Index(users, dtype=object))
    df = events.loc[events["user_id"].isin(row_of.index)].copy()
    df["row"] = row_of.reindex(df["user_id"]).to_numpy()
    df["seq"] = np.arange(len(df))
    df = df.sort_values(["row", "timestamp", "seq"], kind="stable").reset_index(drop=True)
    qual = (df["weight"] > 0).to_numpy()
    q = df.loc[qual]
    pos = q.groupby("row").cumcount().to_numpy()
    n = q.groupby("row")["row"].transform("size").to_numpy()
    h = np.maximum(1, np.rint(n * config.holdout_fraction)).astype(np.int64)
    n_fit = n - h
    t = np.minimum(np.maximum(1, np.rint(n_fit * config.target_fraction)).astype(np.int64), n_fit - 1)
    role = np.where(pos >= n_fit, 2, np.where(pos >= n_fit - t, 1, 0))  # 0 context, 1 target, 2 tail
    # Cut times per user: a non-qualifying event belongs to the part its timestamp falls in.
    qrow = q["row"].to_numpy()
    ts = q["timestamp"].to_numpy()
    first_target = pd.Series(ts[role == 1], index=qrow[role == 1]).groupby(level=0).min()
    first_tail = pd.Series(ts[role == 2], index=qrow[role == 2]).groupby(level=0).min()
    all_role = np.full(len(df), -1)
    all_role[qual] = role
    nq = ~qual
    rows_nq = df["row"].to_numpy()[nq]
    ts_nq = df["timestamp"].to_numpy()[nq]
    tgt_cut = first_target.reindex(rows_nq).to_numpy()
    tail_cut = first_tail.reindex(rows_nq).to_numpy()
    all_role[nq] = np.where(ts_nq < tgt_cut, 0, np.where(ts_nq < tail_cut, 1, 2))
    context = df.loc[all_role == 0]
    fit = df.loc[(all_role == 0) | (all_role == 1)]
    x_context, off_context = _split(inputs(context, users))
    x_eval, off_eval = _split(inputs(fit, users))
    tq = q.loc[role == 1]
    hq = q.loc[role == 2]
    n_users, rows_t, rows_h = len(users), tq["row"].to_numpy(), hq["row"].to_numpy()
    return TrainingSet(
        user_ids=users,
        x_context=x_context,
        x_eval=x_eval,
        targets=_pad(rows_t, tq["item"].to_numpy(), n_users, 0, torch.long),
        target_weight=_pad(rows_t, tq["weight"].to_numpy(dtype=float), n_users, 0.0, torch.float32),
        holdout=_pad(rows_h, hq["item"].to_numpy(), n_users, 0, torch.long),
        holdout_mask=_pad(rows_h, np.ones(len(hq)), n_users, 0.0, torch.float32),
        history=_mask(df["row"].to_numpy(), df["item"].to_numpy(), n_users, n_items),
        eval_seen=_mask(fit["row"].to_numpy(), fit["item"].to_numpy(), n_users, n_items),
        offset_context=off_context,
        offset_eval=off_eval,
        tower_weight=tower_weight,
    )
