"""Adapters on a fitted engine (:class:`sona.Sona`): batch training and the single-user update.

The engine is seen only through its hooks, the :class:`~sona.lora._protocol.AdaptableEngine`
protocol (``scorer_``, ``model_id_``, ``user_events``, ``training_view``, ``attach``);
this module turns users' events into training data and attaches a
:class:`~sona.lora.model.UserAdapter` with ``engine.attach`` so
``recommend``/``score`` use it (``use_adapter=False`` gives the base model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from sona.errors import ConfigError, NotFittedError
from sona.features import engagement_weight
from sona.lora._data import InputBuilder
from sona.lora._protocol import AdaptableEngine
from sona.lora._store import AdapterStore
from sona.lora._summary import AdapterTrainingSummary
from sona.lora.config import UserAdapterConfig
from sona.lora.model import TrainMethod, UserAdapter

__all__ = ["attach_adapters", "train_adapters", "update_user_adapter"]


def _check(engine: AdaptableEngine) -> None:
    if not hasattr(engine, "scorer_") or not hasattr(engine, "users_"):
        raise NotFittedError("the engine is not fitted; call fit(events) before training adapters")


def attach_adapters(
    engine: AdaptableEngine,
    *,
    config: UserAdapterConfig | None = None,
    store: AdapterStore | None = None,
    byte_budget: int = 64 << 20,
) -> UserAdapter:
    """Return the engine's adapter set, creating (and attaching) one when needed.

    The existing set is kept when it is built on the engine's current scorer and
    model id and matches ``config``/``store`` (None means "whatever it has");
    otherwise a new set replaces it (resident adapters then reload lazily from the
    store, and only those trained on the engine's model id attach).
    """
    _check(engine)
    current: Any = engine.adapters_
    model_id = getattr(engine, "model_id_", None) or None
    if (
        isinstance(current, UserAdapter)
        and current.scorer is engine.scorer_
        and current.model_id == model_id
        and (config is None or config == current.config)
        and (store is None or store is current.store)
    ):
        return current
    keep = current if isinstance(current, UserAdapter) else None
    adapters = UserAdapter(
        engine.scorer_,
        config or (keep.config if keep else UserAdapterConfig()),
        store=store if store is not None else (keep.store if keep else None),
        byte_budget=byte_budget,
        model_id=model_id,
        on_stale=keep.on_stale if keep else None,
    )
    engine.attach(adapters)
    return adapters


def engine_events(engine: AdaptableEngine, user_ids: Sequence[str]) -> pd.DataFrame:
    """The users' events with catalog ``item`` positions and engagement ``weight``."""
    ev = engine.user_events(list(user_ids))
    out = ev.copy()
    out["item"] = engine.catalog.index_of(ev["content_id"].to_numpy())
    out["weight"] = engagement_weight(
        ev["completion_rate"].to_numpy(),
        ev["rating"].to_numpy(),
        ev["dismissed"].to_numpy(),
        min_completion=engine.config.min_completion,
    )
    return out


def engine_inputs(engine: AdaptableEngine, *, fused: bool = True) -> InputBuilder:
    """Tower inputs from any subset of events, built by :meth:`sona.Sona.training_view`.

    With ``fused`` it also returns the engine's other score sources for those
    profiles, so adapters train on (and are accepted by) the ranking that is served.
    """

    def build(events: pd.DataFrame, user_ids: list[str]) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        view = engine.training_view(events, user_ids, fixed=fused)
        if view.fixed_scores is None:
            return view.tower_inputs
        return view.tower_inputs, view.fixed_scores

    return build


def train_adapters(
    engine: AdaptableEngine,
    user_ids: Sequence[str] | None = None,
    *,
    config: UserAdapterConfig | None = None,
    store: AdapterStore | None = None,
    force: bool = False,
    method: TrainMethod = "batched",
    batch_size: int = 1024,
    fused: bool = True,
) -> AdapterTrainingSummary:
    """Train adapters for ``user_ids`` (default: every known user) in batches.

    Users below ``min_events`` qualifying events, or trained within
    ``min_interval_seconds`` (unless ``force``), are reported as skipped.
    Winners are saved to the store (if any) and attached: ``engine.recommend``
    uses them from now on.

    Returns
    -------
    AdapterTrainingSummary
        trained / rejected / skipped / failed users, per-user held-out metrics, lift.
    """
    _check(engine)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    adapters = attach_adapters(engine, config=config, store=store)
    users = [str(u) for u in (engine.users_ if user_ids is None else user_ids)]
    inputs = engine_inputs(engine, fused=fused)
    tw = float(engine.config.w_tower) if fused else 1.0
    total = AdapterTrainingSummary()
    frames = []
    for lo in range(0, len(users), batch_size):  # memory bound: one vectorized batch per chunk
        chunk = users[lo : lo + batch_size]
        part = adapters.train_users(
            engine_events(engine, chunk), chunk, inputs=inputs, force=force, method=method, tower_weight=tw
        )
        total.trained += part.trained
        total.rejected += part.rejected
        total.skipped.update(part.skipped)
        total.failed.update(part.failed)
        total.seconds += part.seconds
        if not part.metrics.empty:
            frames.append(part.metrics)
    if frames:
        total.metrics = pd.concat(frames, ignore_index=True)
    return total


def update_user_adapter(
    engine: AdaptableEngine,
    user_id: str,
    *,
    force: bool = False,
    config: UserAdapterConfig | None = None,
    store: AdapterStore | None = None,
) -> AdapterTrainingSummary:
    """Train one user's adapter now (the service's ``UpdateUserLoRA`` operation).

    Raises
    ------
    InsufficientDataError
        The user has fewer than ``min_events`` qualifying events (unknown users have 0).
    TrainedTooRecentlyError
        The last training was less than ``min_interval_seconds`` ago and ``force`` is False;
        ``retry_after_seconds`` says how long to wait.
    """
    _check(engine)
    adapters = attach_adapters(engine, config=config, store=store)
    uid = str(user_id)
    return adapters.train_users(
        engine_events(engine, [uid]),
        [uid],
        inputs=engine_inputs(engine),
        force=force,
        strict=True,
        tower_weight=float(engine.config.w_tower),
    )
