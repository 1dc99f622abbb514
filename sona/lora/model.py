"""``UserAdapter``: the set of per-user adapters over one base scorer.

It creates, trains, activates (makes resident), saves, loads and rolls back
adapters, and scores a mixed batch of users in one pass. Adapters are
addressed by :func:`adapter_name`; a user with no resident adapter is scored by
the base model exactly. Serving never fails because of an adapter: a missing
or corrupt checkpoint logs a warning and the user falls back to the base model.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch

from sona.errors import (
    AdapterCorruptError,
    ConfigError,
    InsufficientDataError,
    StorageError,
    TrainedTooRecentlyError,
    UnknownUserError,
)
from sona.lora._data import InputBuilder, build_training_set, qualifying_counts
from sona.lora._hot import PackedAdapters
from sona.lora._names import adapter_name
from sona.lora._stacked import lora_tower
from sona.lora._store import AdapterStore
from sona.lora._summary import AdapterTrainingSummary
from sona.lora._training import (
    BatchTrainingResult,
    TrainingSet,
    _init,
    _seeds,
    train_batched,
    train_reference,
)
from sona.lora.config import UserAdapterConfig
from sona.lora.layer import AdapterWeights, attach, set_peft_weights
from sona.models._tower import TowerScorer

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["UserAdapter"]

logger = logging.getLogger("sona.lora")

TrainMethod = Literal["batched", "reference"]


class UserAdapter:
    """Per-user LoRA adapters on ``scorer``'s user tower.

    Parameters
    ----------
    scorer
        The frozen base model; never modified.
    config
        Shape, training and storage settings of new adapters.
    store
        Where versions are saved and lazily loaded from; None keeps adapters in memory only.
    byte_budget
        Bound on the packed in-memory stacks (LRU eviction beyond it).
    max_rank
        Largest adapter rank the packed store accepts (default: ``config.rank``; lower
        ranks are zero-padded, so raise it to serve adapters of mixed ranks).
    miss_ttl_seconds
        How long a user found without an adapter in ``store`` is not looked up again.
    model_id
        The base model these adapters belong to (``Sona.model_id_``). New adapters are
        stamped with it; a stored adapter trained on another model (or on an unknown one)
        is never attached: the user counts as missing, it is logged and counted in
        ``stale_``, and ``on_stale(user_id, adapter_model_id)`` is called.
    """

    def __init__(
        self,
        scorer: TowerScorer,
        config: UserAdapterConfig | None = None,
        *,
        store: AdapterStore | None = None,
        byte_budget: int = 64 << 20,
        max_rank: int | None = None,
        miss_ttl_seconds: float = 30.0,
        model_id: str | None = None,
        on_stale: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.scorer = scorer
        self.config = config or UserAdapterConfig()
        self.store = store
        self.miss_ttl_seconds = miss_ttl_seconds
        self.model_id = model_id
        self.on_stale = on_stale
        self.stale_ = 0
        shapes: dict[str, tuple[int, int]] = {}
        for m in self.config.target_modules:
            try:
                layer = scorer.tower.get_submodule(m)
            except AttributeError as exc:
                raise ConfigError(f"the user tower has no module {m!r} to adapt") from exc
            if not isinstance(layer, torch.nn.Linear):
                raise ConfigError(f"LoRA target {m!r} must be an nn.Linear, got {type(layer).__name__}")
            shapes[m] = (layer.in_features, layer.out_features)
        self.packed_ = PackedAdapters(
            shapes,
            max_rank=max_rank or self.config.rank,
            byte_budget=byte_budget,
            dtype=torch.float16 if self.config.storage_dtype == "float16" else torch.float32,
        )
        self._misses: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"UserAdapter(resident={len(self.packed_)}, store={self.store!r})"

    def __contains__(self, user_id: object) -> bool:
        return user_id in self.packed_

    # -- create / activate -----------------------------------------------------
    def create(self, user_id: str) -> AdapterWeights:
        """A fresh, untrained adapter (seeded A, zero B): scores exactly like the base model."""
        a, b = _init(self.scorer, self.config, _seeds([user_id], self.config.seed))
        return AdapterWeights(
            user_id=user_id,
            rank=self.config.rank,
            alpha=self.config.alpha,
            lora_A={m: t[0] for m, t in a.items()},
            lora_B={m: t[0] for m, t in b.items()},
        )

    def activate(self, weights: AdapterWeights) -> None:
        """Make ``weights`` the user's serving adapter (resident in the packed store)."""
        for m, (i, o) in self.packed_.shapes.items():
            if m in weights.lora_A and (weights.lora_A[m].shape[1] != i or weights.lora_B[m].shape[0] != o):
                raise AdapterCorruptError(weights.user_id, weights.version, f"shape mismatch on {m!r}")
        self.packed_.put(weights)
        self._misses.pop(weights.user_id, None)

    def deactivate(self, user_id: str) -> bool:
        """Serve ``user_id`` with the base model again (stored versions are kept)."""
        return self.packed_.remove(user_id)

    def export(self, user_id: str) -> AdapterWeights:
        """The resident adapter of ``user_id`` (scaling unfolded, padding removed)."""
        if user_id not in self.packed_:
            raise UnknownUserError(user_id)
        slot = self.packed_.slots([user_id])
        a, b = self.packed_.gather(slot)
        r, s = self.config.rank, self.config.scaling
        return AdapterWeights(
            user_id=user_id,
            rank=r,
            alpha=self.config.alpha,
            lora_A={m: t[0, :r].clone() for m, t in a.items()},
            lora_B={m: t[0, :, :r] / s for m, t in b.items()},
            version=self.packed_.version(user_id),
        )

    # -- train -----------------------------------------------------------------
    def fit(
        self, data: TrainingSet, *, method: TrainMethod = "batched", save: bool = True
    ) -> BatchTrainingResult:
        """Train the adapters of every user in ``data``; activate (and save) the kept ones.

        ``method="reference"`` trains one peft adapter at a time (slow; the oracle).
        A user whose adapter does not beat the base on their held-out tail keeps
        whatever adapter they had.
        """
        trainer = train_batched if method == "batched" else train_reference
        result = trainer(self.scorer, data, self.config)
        kept = [result.weights(row) for row in torch.nonzero(result.kept).flatten().tolist()]
        for weights in kept:
            weights.model_id = self.model_id
        stored = self.store.save_many(kept, self.config) if save and self.store is not None else []
        errors = [got for got in stored if isinstance(got, StorageError)]
        for weights, got in itertools.zip_longest(kept, stored):
            if not isinstance(got, StorageError):
                self.activate(weights)
        if errors:
            raise errors[0]
        return result

    def train_users(
        self,
        events: pd.DataFrame,
        user_ids: Sequence[str],
        *,
        inputs: InputBuilder,
        force: bool = False,
        strict: bool = False,
        method: TrainMethod = "batched",
        now: datetime | None = None,
        tower_weight: float = 1.0,
    ) -> AdapterTrainingSummary:
        """Apply the guards, train every eligible user in one batch, save and activate the winners.

        Parameters
        ----------
        events
            Frame with ``user_id``, ``content_id``, ``item`` (index into the
            scorer's titles), ``timestamp`` and ``weight`` (engagement; > 0 qualifies).
        inputs
            Builds tower inputs from an events frame (see :data:`~sona.lora._data.InputBuilder`).
        force
            Skip the minimum-interval guard.
        tower_weight
            Weight of the z-scored tower logits when ``inputs`` also returns offsets.
        strict
            Raise the guard's error instead of recording the user as skipped
            (the single-user service operation wants the typed error).

        Raises
        ------
        InsufficientDataError, TrainedTooRecentlyError
            Only with ``strict=True``.
        """
        start = time.perf_counter()
        now = now or datetime.now(UTC)
        cfg = self.config
        users = list(dict.fromkeys(str(u) for u in user_ids))
        summary = AdapterTrainingSummary()
        counts = qualifying_counts(events, users)
        enough = [u for u, c in zip(users, counts.tolist(), strict=True) if c >= cfg.min_events]
        trained_at = {} if force or self.store is None else self.store.last_trained_many(enough)
        eligible: list[str] = []
        for u, count in zip(users, counts.tolist(), strict=True):
            if count < cfg.min_events:
                if strict:
                    raise InsufficientDataError(u, count, cfg.min_events)
                summary.skipped[u] = (
                    f"insufficient data: {count} qualifying events, {cfg.min_events} required"
                )
                continue
            last = trained_at.get(u)
            if last is not None:
                wait = cfg.min_interval_seconds - (now - last).total_seconds()
                if wait > 0:
                    if strict:
                        raise TrainedTooRecentlyError(u, wait)
                    summary.skipped[u] = f"trained too recently: retry after {wait:.0f} s"
                    continue
            eligible.append(u)
        if not eligible:
            summary.seconds = time.perf_counter() - start
            return summary
        n_items = self.scorer.item_bias.shape[0]
        data = build_training_set(events, eligible, n_items, cfg, inputs, tower_weight=tower_weight)
        result = (train_batched if method == "batched" else train_reference)(self.scorer, data, cfg)
        finite = torch.ones(len(eligible), dtype=torch.bool)
        for t in (*result.lora_A.values(), *result.lora_B.values()):
            finite &= torch.isfinite(t).flatten(1).all(1)
        versions: dict[str, int] = {}
        winners: list[AdapterWeights] = []
        for row, u in enumerate(eligible):
            if not bool(finite[row]):
                summary.failed[u] = "training produced non-finite adapter weights"
            elif bool(result.kept[row]):
                weights = result.weights(row)
                weights.model_id = self.model_id
                winners.append(weights)
            else:
                summary.rejected.append(u)
        # one batched write for the whole chunk: stored together, then served
        saved = self.store.save_many(winners, cfg) if self.store is not None else [None] * len(winners)
        for weights, outcome in zip(winners, saved, strict=True):
            if isinstance(outcome, StorageError):
                summary.failed[weights.user_id] = str(outcome)
                continue
            if outcome is not None:
                versions[weights.user_id] = outcome
            self.activate(weights)
            summary.trained.append(weights.user_id)
        if self.store is not None and summary.rejected:
            marked = self.store.mark_trained_many(summary.rejected, now)
            for u, err in zip(summary.rejected, marked, strict=True):
                if err is not None:
                    logger.warning("could not record training time of %r: %s", u, err)
        summary.metrics = pd.DataFrame(
            {
                "user_id": eligible,
                "n_events": pd.Series(counts, index=users).reindex(eligible).to_numpy(),
                "holdout_base": result.base_score.numpy().astype(np.float64),
                "holdout_adapter": result.best_score.numpy().astype(np.float64),
                "kept": result.kept.numpy() & finite.numpy(),
                "version": pd.array([versions.get(u) for u in eligible], dtype="Int64"),
            }
        )
        summary.seconds = time.perf_counter() - start
        return summary

    # -- storage ---------------------------------------------------------------
    def save(self, user_id: str) -> int:
        """Store the resident adapter of ``user_id`` as a new version."""
        if self.store is None:
            raise ConfigError("this UserAdapter has no store to save to")
        weights = self.export(user_id)
        weights.model_id = self.model_id
        version = self.store.save(weights, self.config)
        self.packed_._versions[user_id] = version
        return version

    def load(self, user_id: str, version: int | None = None) -> bool:
        """Load a stored version (default latest) and activate it.

        Returns False, with a logged warning when the files are corrupt, if the
        user cannot get an adapter; the user is then served by the base model.
        """
        if self.store is None:
            return False
        try:
            weights = self.store.load(user_id, version)
            if self.model_id is not None and weights.model_id != self.model_id:
                self._stale(user_id, weights.model_id)
                return False
            self.activate(weights)
            return True
        except UnknownUserError:
            self.packed_.remove(user_id)
            self._misses[user_id] = time.monotonic()
            return False
        except (AdapterCorruptError, StorageError, ConfigError) as exc:
            logger.warning("adapter for user %r unusable, serving the base model: %s", user_id, exc)
            self.packed_.remove(user_id)
            self._misses[user_id] = time.monotonic()
            return False

    def _stale(self, user_id: str, adapter_model: str | None) -> None:
        """An adapter of another base model: never attached, the user is served by the base model."""
        logger.warning(
            "adapter for user %r was trained on model %s, not on the serving model %s: not attached "
            "(missing until retrained)",
            user_id,
            adapter_model or "(unknown)",
            self.model_id,
        )
        self.stale_ += 1
        self.packed_.remove(user_id)
        self._misses[user_id] = time.monotonic()
        if self.on_stale is not None:
            self.on_stale(user_id, adapter_model)

    def invalidate(self, user_ids: Sequence[str]) -> None:
        """Forget what is known about these users' stored adapters (a new version was stored or
        one was deleted elsewhere): the next request reads the store again."""
        for u in dict.fromkeys(str(u) for u in user_ids):
            self.packed_.remove(u)
            self._misses.pop(u, None)

    def rollback(self, user_id: str) -> int | None:
        """Drop the latest stored version and serve the previous one (None: base model)."""
        if self.store is None:
            raise ConfigError("this UserAdapter has no store to roll back in")
        current = self.store.rollback(user_id)
        if current is None or not self.load(user_id, current):
            self.packed_.remove(user_id)
        return current

    def _ensure_loaded(self, user_ids: Sequence[str]) -> None:
        if self.store is None:
            return
        now = time.monotonic()
        ttl = self.miss_ttl_seconds
        for u in dict.fromkeys(user_ids):  # lookups only for users not yet resident
            if u in self.packed_:
                continue
            missed = self._misses.get(u)
            if missed is not None and now - missed < ttl:
                continue
            self.load(u)

    # -- scoring ---------------------------------------------------------------
    def user_embeddings(self, user_ids: Sequence[str], x: torch.Tensor) -> torch.Tensor:
        """Tower output with each row's adapter: base layers once, gathered low-rank terms. (n, dim)"""
        if len(user_ids) != x.shape[0]:
            raise ConfigError(f"{len(user_ids)} user ids for {x.shape[0]} input rows")
        self._ensure_loaded(user_ids)
        slots = self.packed_.slots(user_ids)
        with torch.no_grad():
            if not bool(slots.any()):
                return self.scorer.tower(x)
            a, b = self.packed_.gather(slots, reuse=True)
            return lora_tower(self.scorer.tower, x, a, b, 1.0)

    def tower_logits(
        self,
        user_ids: Sequence[str],
        x: torch.Tensor,
        scorer: TowerScorer | None = None,
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (n, n_items) for a mixed batch; users without an adapter get the base logits.

        ``out`` (n, n_items) float32 receives the result when given: a caller scoring
        batch after batch reuses one buffer instead of page-faulting a fresh one each time.
        """
        s = scorer or self.scorer
        with torch.no_grad():
            # one GEMM with the bias fused in (addmm), as the base-only path does
            return torch.addmm(s.item_bias, self.user_embeddings(user_ids, x), s.item_embeddings.T, out=out)

    def resident_embeddings(
        self, user_ids: Sequence[str], x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the batch whose user has a resident adapter, and those rows' adapted tower outputs.

        The serving hot path: users without an adapter are left out (no tower
        pass), and no logits are materialized: the engine puts the adapted
        embeddings into its fused GEMM in place of the base ones. Returns
        ``(rows, emb)`` with ``rows`` (m,) long and ``emb`` (m, dim).
        """
        if len(user_ids) != x.shape[0]:
            raise ConfigError(f"{len(user_ids)} user ids for {x.shape[0]} input rows")
        self._ensure_loaded(user_ids)
        slots = self.packed_.slots(user_ids)
        rows = torch.nonzero(slots).flatten()
        with torch.no_grad():
            if not len(rows):
                return rows, torch.empty((0, self.scorer.item_embeddings.shape[1]), dtype=torch.float32)
            a, b = self.packed_.gather(slots[rows], reuse=True)
            return rows, lora_tower(self.scorer.tower, x[rows], a, b, 1.0)

    def resident_logits(
        self, user_ids: Sequence[str], x: torch.Tensor, scorer: TowerScorer | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`resident_embeddings`, with the rows' adapted logits (m, n_items) instead."""
        s = scorer or self.scorer
        rows, emb = self.resident_embeddings(user_ids, x)
        with torch.no_grad():
            # one GEMM with the bias fused in (addmm), exactly as tower_logits computes it
            return rows, torch.addmm(s.item_bias, emb, s.item_embeddings.T)

    def peft_model(self, user_ids: Sequence[str]) -> PeftModel:
        """A peft-wrapped copy of the scorer holding these users' resident adapters (by adapter_name)."""
        names = [adapter_name(u) for u in user_ids]
        model = attach(self.scorer, self.config, names)
        for u, name in zip(user_ids, names, strict=True):
            set_peft_weights(model, name, self.export(u))
        return model
