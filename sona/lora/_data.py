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
    """Split each user's events into context / targets (per cut point) / tail and tensorize.

    ``events`` needs ``user_id``, ``item`` (int index into the scorer's items),
    ``content_id``, ``timestamp`` and ``weight``. Every user in ``user_ids`` must
    have at least 3 qualifying events (callers enforce ``min_events`` first).

    Cut ``j`` of ``config.cut_points`` takes as targets the window of ``t`` qualifying
    events ending ``j * t`` events before the tail, and as context everything before
    that window; a cut with no context left (short histories) gets no weight.
    """
    users = list(user_ids)
    n_users, k_cuts = len(users), config.cut_points
    row_of = pd.Series(np.arange(n_users), index=pd.Index(users, dtype=object))
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
    qrow = q["row"].to_numpy()
    ts = q["timestamp"].to_numpy(dtype="datetime64[ns]")  # object Timestamps when tz-aware: slow
    rows_nq = df["row"].to_numpy()[~qual]
    ts_nq = df["timestamp"].to_numpy(dtype="datetime64[ns]")[~qual]
    df_rows = df["row"].to_numpy()
    xs, offs, t_rows, t_items, t_weights = [], [], [], [], []
    for j in range(k_cuts):  # a handful of cuts; each is vectorized over all users and events
        cut = n_fit - t * (j + 1)
        valid = cut >= 1
        cut = np.maximum(cut, 1)
        is_target = (pos >= cut) & (pos < np.minimum(cut + t, n_fit)) & valid
        # a non-qualifying event joins the context when it precedes the cut's first target
        first = pd.Series(ts[pos == cut], index=qrow[pos == cut])
        before = np.zeros(len(df), dtype=bool)
        before[qual] = pos < cut
        before[~qual] = ts_nq < first.reindex(rows_nq).to_numpy()
        built = _split(inputs(df.loc[before], users))
        xs.append(built[0])
        offs.append(built[1])
        t_rows.append(qrow[is_target] * k_cuts + j)
        t_items.append(q["item"].to_numpy()[is_target])
        t_weights.append(q["weight"].to_numpy(dtype=float)[is_target] * config.cut_decay**j)
    # tail: the last h qualifying events; the eval profile is everything before it
    role_tail = pos >= n_fit
    first_tail = pd.Series(ts[role_tail], index=qrow[role_tail]).groupby(level=0).min()
    fit_mask = np.zeros(len(df), dtype=bool)
    fit_mask[qual] = ~role_tail
    fit_mask[~qual] = ts_nq < first_tail.reindex(rows_nq).to_numpy()
    fit = df.loc[fit_mask]
    x_eval, off_eval = _split(inputs(fit, users))
    order = np.argsort(np.concatenate(t_rows), kind="stable")
    rows_t = np.concatenate(t_rows)[order]
    hq = q.loc[role_tail]
    rows_h = hq["row"].to_numpy()
    shape = (n_users, k_cuts, -1)
    return TrainingSet(
        user_ids=users,
        x_context=torch.stack(xs, dim=1),
        x_eval=x_eval,
        targets=_pad(rows_t, np.concatenate(t_items)[order], n_users * k_cuts, 0, torch.long).view(shape),
        target_weight=_pad(
            rows_t, np.concatenate(t_weights)[order], n_users * k_cuts, 0.0, torch.float32
        ).view(shape),
        holdout=_pad(rows_h, hq["item"].to_numpy(), n_users, 0, torch.long),
        holdout_mask=_pad(rows_h, np.ones(len(hq)), n_users, 0.0, torch.float32),
        history=_mask(df_rows, df["item"].to_numpy(), n_users, n_items),
        eval_seen=_mask(fit["row"].to_numpy(), fit["item"].to_numpy(), n_users, n_items),
        offset_context=None if offs[0] is None else torch.stack(offs, dim=1),  # type: ignore[arg-type]
        offset_eval=off_eval,
        tower_weight=tower_weight,
    )
