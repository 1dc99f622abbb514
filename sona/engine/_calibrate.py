"""Calibrating the engine's score on a held-out slice of its own training run.

Before training, a bounded random sample of users (``SHARE`` of them, at most
``MAX_USERS``) has its last ``TAIL`` share of events set aside
(:func:`holdout_mask`): the networks and item-item weights are trained without
them, the served profiles still include them. Afterwards the pairs are scored
by the model itself with those users' profiles rebuilt from the rest (through
:func:`~sona.engine._ranking.training_view`, the served fusion): the fused score of every
held-out title the user had not seen before is a positive, that of a sample of
the other unseen titles a negative (weighted by the inverse sampling rate).
:func:`~sona.models.fit_platt` on these pairs gives ``score`` ≈ P(title among
the user's next interactions), where "next" means about the next ``TAIL``
share of the user's history.

Notes
-----
Scores of events the model trained on run optimistic (in-sample, the top decile
predicted 0.089 where 0.036 came true on ml-100k), which is why the slice is
held out of training. Earlier versions fitted a second engine on everyone's
head instead (``"refit"``, now read as ``"holdout"``), doubling the fit time.
``"in_sample"`` scores the same sample's tails without holding them out. The
cost is bounded: every sampled user's fused scores cover the whole catalog, so
the sample holds at most ``MAX_CELLS`` / n_titles users (at least
``MIN_USERS``), and a larger catalog does not make the calibration dearer. The
test in
``tests/core/test_calibration.py`` checks the probabilities against truly
future events.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from sona.engine._model import FittedModel
from sona.engine._ranking import training_view
from sona.features import EventArrays
from sona.models import PlattScaling, fit_platt
from sona.models._config import SonaConfig

__all__ = ["TAIL", "fit_calibration", "holdout_mask"]

#: Share of each user's (chronological) events held out as "next interactions".
TAIL = 0.1
#: Share of users whose tail is held out, and the caps on their number (bound the cost).
SHARE = 0.2
MAX_USERS = 2000
#: Fused (user, title) scores the calibration may compute: users x n_titles at most this ...
MAX_CELLS = 4_000_000
#: ... unless that leaves fewer users than this (about 5 held-out titles each on 50-event histories).
MIN_USERS = 100
#: Random unseen titles drawn per user as negatives (collisions are dropped).
NEGATIVES = 50
#: Users per fused block (bounds memory at CHUNK x n_items floats).
CHUNK = 1024
#: Fewer positive pairs than this and the fit keeps the uncalibrated squash.
MIN_POSITIVES = 20


def _keys(user: npt.NDArray[np.int64], item: npt.NDArray[np.int64], n_items: int) -> npt.NDArray[np.int64]:
    return user.astype(np.int64) * n_items + item.astype(np.int64)


def _tails(ev: EventArrays, n_users: int) -> npt.NDArray[np.bool_]:
    """Each user's last ``TAIL`` share of events (``ev`` sorted by user, then time)."""
    counts = np.bincount(ev.user, minlength=n_users)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(ev.user)) - start[ev.user]
    n_tail = np.floor(counts * TAIL).astype(np.int64)
    return pos >= (counts - n_tail)[ev.user]


def holdout_mask(config: SonaConfig, ev: EventArrays, n_users: int, n_items: int) -> npt.NDArray[np.bool_]:
    """Events of the calibration slice: the tails of a bounded, seeded sample of users.

    ``ev`` is sorted by user, then time. Empty when ``config.calibration`` is
    ``"off"``; the caller trains without these events unless it is ``"in_sample"``.
    """
    if config.calibration == "off" or len(ev.user) == 0:
        return np.zeros(len(ev.user), dtype=bool)
    tail = _tails(ev, n_users)
    candidates = np.unique(ev.user[tail])
    by_cost = max(MIN_USERS, MAX_CELLS // max(n_items, 1))
    n = min(len(candidates), MAX_USERS, int(np.ceil(SHARE * n_users)), by_cost)
    rng = np.random.default_rng([config.seed, 17])
    chosen = np.zeros(n_users, dtype=bool)
    chosen[rng.choice(candidates, size=n, replace=False)] = True
    return tail & chosen[ev.user]


def fit_calibration(
    model: FittedModel,
    user_ids: npt.NDArray[np.object_],
    frame: pd.DataFrame,
    ev: EventArrays,
    w_event: npt.NDArray[np.float32],
    held_out: npt.NDArray[np.bool_],
) -> PlattScaling | None:
    """Platt parameters for ``model`` from the ``held_out`` events of its training frame.

    ``frame`` is sorted by user, then time; ``ev`` and ``w_event`` are its
    arrays and engagement weights, with users at their positions in
    ``user_ids``; ``held_out`` comes from :func:`holdout_mask`.
    Deterministic for a given ``config.seed``. Returns None when there are too
    few held-out titles or ``config.calibration`` is ``"off"``.
    """
    if model.config.calibration == "off" or not held_out.any():
        return None
    n_users, n_items = len(user_ids), len(model.catalog)
    sample = np.zeros(n_users, dtype=bool)
    sample[ev.user[held_out]] = True
    in_sample = sample[ev.user]
    tail = held_out
    head_keys = np.unique(_keys(ev.user[in_sample & ~tail], ev.item[in_sample & ~tail], n_items))
    pos_keys = np.unique(_keys(ev.user[tail & (w_event > 0)], ev.item[tail & (w_event > 0)], n_items))
    pos_keys = pos_keys[~np.isin(pos_keys, head_keys)]
    if len(pos_keys) < MIN_POSITIVES:
        return None
    users = np.unique(pos_keys // n_items)  # users with something to predict

    rng = np.random.default_rng(model.config.seed)
    neg_items = rng.integers(0, n_items, size=(len(users), NEGATIVES))
    neg_keys = _keys(np.repeat(users, NEGATIVES), neg_items.ravel(), n_items)
    ok = ~np.isin(neg_keys, head_keys) & ~np.isin(neg_keys, pos_keys)
    neg_keys = neg_keys[ok]
    # each kept negative stands for (unseen, non-positive titles) / (kept draws) of its user
    n_head = np.bincount(head_keys // n_items, minlength=n_users)
    n_pos = np.bincount(pos_keys // n_items, minlength=n_users)
    kept = np.bincount(neg_keys // n_items, minlength=n_users)
    population = n_items - n_head - n_pos
    neg_w = (population / np.maximum(kept, 1))[neg_keys // n_items]

    keys = np.concatenate([pos_keys, neg_keys])
    labels = np.concatenate([np.ones(len(pos_keys)), np.zeros(len(neg_keys))])
    weights = np.concatenate([np.ones(len(pos_keys)), neg_w])
    order = np.argsort(keys // n_items, kind="stable")
    keys, labels, weights = keys[order], labels[order], weights[order]
    key_user = keys // n_items

    head = frame.loc[in_sample & ~tail]
    fused = np.empty(len(keys), dtype=np.float64)
    for lo in range(0, len(users), CHUNK):
        chunk = users[lo : lo + CHUNK]
        ids = [str(u) for u in user_ids[chunk]]
        view = training_view(model, head.loc[head["user_id"].isin(ids)], ids, fixed=True)
        with torch.no_grad():
            block = view.served(model.scorer(view.tower_inputs))
        a, b = np.searchsorted(key_user, [chunk[0], chunk[-1] + 1])
        row = np.searchsorted(chunk, key_user[a:b])
        fused[a:b] = block[torch.from_numpy(row), torch.from_numpy(keys[a:b] % n_items)].double().numpy()
    return fit_platt(fused, labels, weights)
