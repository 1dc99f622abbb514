"""What a running SONA service holds: engine, storage, secret and the training queue.

:func:`build_state` is the whole start-up sequence (migrate the database, get
an engine, mirror its catalog into the ``content`` table, start the training
worker). Tests build the same state around a small engine and hand it to
:func:`serving._api.create_app`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from serving._auth import resolve_jwt_secret
from serving._engine import load_or_fit_engine
from serving._jobs import TrainingOutcome, TrainingQueue
from serving._metrics import ADAPTER_STALE, USERS_DROPPED
from sona import (
    FitError,
    InsufficientDataError,
    NotFittedError,
    Sona,
    TrainedTooRecentlyError,
    TrainingRejectedError,
)
from sona.lora import (
    AdapterStore,
    UserAdapterConfig,
    update_user_adapter,
)
from sona.storage import Storage
from sona_app.bootstrap import LiveEngine, adapter_store
from sona_app.settings import Settings

__all__ = ["ServiceState", "build_state"]

logger = logging.getLogger("serving.state")

#: How long clients may cache a recommendation list.
DEFAULT_TTL_SECONDS = 300


def _compare_scores(tuned: float, base: float) -> str:
    """'held-out score A does not beat (or ties) the base model's B', with digits enough to tell A from B."""
    if tuned == base:
        return f"held-out score {tuned:.4f} ties the base model's (an adapter must beat it)"
    digits = 4
    while f"{tuned:.{digits}f}" == f"{base:.{digits}f}" and digits < 17:
        digits += 1
    return f"held-out score {tuned:.{digits}f} does not beat the base model's {base:.{digits}f}"


@dataclass(slots=True)
class ServiceState:
    """Everything the endpoints share.

    ``write_lock`` serializes the writers of the engine's events and profiles
    (``observe``), so two profile updates never interleave; reads do not take
    it, and neither does adapter training, which only reads them and runs on
    the training queue's one worker thread.
    """

    engine: Sona
    storage: Storage
    jwt_secret: str
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    write_lock: threading.RLock = field(default_factory=threading.RLock)
    training: TrainingQueue | None = None
    adapter_config: UserAdapterConfig = field(default_factory=UserAdapterConfig)
    adapter_store: AdapterStore | None = None
    #: Follows the database's change feed: users' events, adapter versions, model rollouts.
    live: LiveEngine | None = None

    def fresh(self, user_id: str) -> None:
        """Bring the user's state up to date from the database before serving them (first request)."""
        if self.live is not None:
            self.live.ensure_user(user_id)

    def start(self) -> ServiceState:
        """Start this worker's training thread: it claims queued jobs, and jobs whose lease expired.

        Jobs other processes hold under a live lease are left alone, so starting
        a replica never fails or re-runs another replica's training.
        """
        if self.training is None:
            self.training = TrainingQueue(self.storage, self._train)
        self.training.start()
        return self

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
        if self.training is not None:
            self.training.stop()

    def ready_model(self) -> bool:
        """True once the engine is fitted."""
        return hasattr(self.engine, "state_")

    def submit_training(self, user_id: str, *, force: bool) -> str:
        """Check the guards now (422 / 409 to the caller), then queue the job; returns its id."""
        self.check_training(user_id, force=force)
        if self.training is None:
            raise NotFittedError("the training worker is not running")
        return self.training.submit(user_id, force)

    def check_training(self, user_id: str, *, force: bool) -> None:
        """The training guards, answered from the database before anything is queued.

        The worker applies the same guards again (``strict``), so a race between
        two requests ends as a ``skipped`` job, never as two trainings.
        """
        cfg = self.adapter_config
        count = self.storage.count_qualifying_events(user_id)
        if count < cfg.min_events:
            raise InsufficientDataError(user_id, count, cfg.min_events)
        if force:
            return
        last = self.adapter_store.last_trained_at(user_id) if self.adapter_store else None
        if last is None:
            last = self.storage.last_trained_at(user_id)
        if last is not None:
            wait = cfg.min_interval_seconds - (datetime.now(UTC) - last).total_seconds()
            if wait > 0:
                raise TrainedTooRecentlyError(user_id, wait)

    def _train(self, user_id: str, force: bool) -> TrainingOutcome:
        """One user's ``UpdateUserLoRA``, run by the worker thread.

        An adapter that does not beat the base model on the user's held-out
        tail is not kept; that job ends ``skipped`` with the reason.
        """
        self.fresh(user_id)  # train on every event the database holds for the user
        # No write lock: training only reads the engine (``observe`` publishes new state by
        # assignment and the event log swaps its merged form in atomically), and it only ever
        # runs on this one worker thread, so /profile/update is never held up by a training run.
        summary = update_user_adapter(
            self.engine, user_id, force=force, config=self.adapter_config, store=self.adapter_store
        )
        if user_id in summary.failed:
            raise FitError(summary.failed[user_id])
        row = summary.metrics.loc[summary.metrics["user_id"] == user_id]
        if user_id not in summary.trained or row.empty:
            base = float(row["holdout_base"].iloc[0]) if not row.empty else float("nan")
            tuned = float(row["holdout_adapter"].iloc[0]) if not row.empty else float("nan")
            raise TrainingRejectedError(f"adapter not kept: {_compare_scores(tuned, base)}")
        version = row["version"].iloc[0]
        return TrainingOutcome(
            events_used=int(row["n_events"].iloc[0]),
            adapter_version=None if pd.isna(version) else int(version),
            metrics={
                "holdout_base": float(row["holdout_base"].iloc[0]),
                "holdout_adapter": float(row["holdout_adapter"].iloc[0]),
            },
        )


def build_state(settings: Settings) -> ServiceState:
    """Start-up: refuse without a JWT secret (unless dev mode), migrate, load or fit, start the worker."""
    secret = resolve_jwt_secret(settings)
    storage = Storage(settings.database_url)
    storage.upgrade()
    engine = load_or_fit_engine(settings, storage)
    store = adapter_store(settings, storage)
    state = ServiceState(engine=engine, storage=storage, jwt_secret=secret, adapter_store=store)

    def swapped(new: Sona) -> None:  # a model rollout: requests from now on use the new engine
        state.engine = new

    def stale(user_id: str, model_id: str | None) -> None:
        ADAPTER_STALE.inc()

    # Serves adapters trained earlier (cron job, other replicas) from the start, and follows
    # the change feed: other processes' events, new adapter versions, model rollouts.
    state.live = LiveEngine(
        engine,
        storage,
        settings=settings,
        store=store,
        adapter_config=state.adapter_config,
        lock=state.write_lock,
        on_swap=swapped,
        on_stale=stale,
        on_forget=USERS_DROPPED.inc,
    ).start()
    return state.start()
