"""Queued LoRA training: one in-process worker thread fed by a FIFO queue.

``POST /lora/train`` records a job row and enqueues it; the request returns
202 at once. One worker thread runs jobs in order, so two trainings never
mutate the engine at the same time, and records each outcome in the job row
(``running`` → ``succeeded`` / ``skipped`` / ``failed``) for
``GET /lora/jobs/{id}``. A BentoML ``@bentoml.task`` was not used: its
submit/status routes and ids are BentoML's own, while the API contract needs
our job ids, statuses and guards (422/409) checked before queueing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from serving._metrics import TRAINING_JOBS
from sona import TrainingRejectedError

__all__ = ["JobStore", "TrainingInProgressError", "TrainingOutcome", "TrainingQueue"]

logger = logging.getLogger("serving.jobs")


class TrainingInProgressError(TrainingRejectedError):
    """The user already has a training job queued or running."""

    def __init__(self, user_id: str, job_id: str) -> None:
        super().__init__(f"user {user_id!r} already has training job {job_id} queued or running")
        self.user_id = user_id
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    """What one finished training reports back to its job row."""

    events_used: int
    adapter_version: int | None
    metrics: dict[str, float]


class JobStore(Protocol):
    """The part of :class:`sona.storage.Storage` the queue needs."""

    def create_job(self, user_id: str) -> object: ...

    def update_job(self, job_id: str, **fields: object) -> object: ...


Trainer = Callable[[str, bool], TrainingOutcome]


class TrainingQueue:
    """FIFO of training jobs, run one at a time by a daemon thread.

    Parameters
    ----------
    store
        Where job rows live (``create_job`` / ``update_job``).
    train
        ``train(user_id, force)`` trains and installs one user's adapter.
        A :class:`~sona.TrainingRejectedError` marks the job ``skipped``;
        any other exception marks it ``failed`` with a one-line error.
    """

    def __init__(self, store: JobStore, train: Trainer) -> None:
        self._store = store
        self._train = train
        self._queue: queue.Queue[tuple[str, str, bool] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._pending_lock = threading.Lock()
        self._active: dict[str, list[str]] = {}  # user id -> ids of their queued or running jobs

    def start(self) -> TrainingQueue:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="sona-lora-training", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Let the running job finish, then end the thread; queued jobs stay ``queued``."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, user_id: str, force: bool) -> str:
        """Record a ``queued`` job and enqueue it; returns the job id.

        Raises
        ------
        TrainingInProgressError
            The user already has a job queued or running: one at a time per
            user, so nobody can fill the queue (forced or not).
        """
        with self._pending_lock:
            active = self._active.get(user_id)
            if active:
                raise TrainingInProgressError(user_id, active[0])
            job = self._store.create_job(user_id)
            job_id = str(job.job_id)  # type: ignore[attr-defined]
            self._put(job_id, user_id, force)
        return job_id

    def enqueue(self, job_id: str, user_id: str, force: bool = False) -> None:
        """Queue an existing ``queued`` job row (jobs left behind by a previous process)."""
        with self._pending_lock:
            self._put(job_id, user_id, force)

    def _put(self, job_id: str, user_id: str, force: bool) -> None:
        """Enqueue; the caller holds ``_pending_lock``."""
        self._idle.clear()
        self._active.setdefault(user_id, []).append(job_id)
        self._queue.put((job_id, user_id, force))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has finished (for shutdown and scripts)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._execute(*item)
            finally:
                with self._pending_lock:
                    if item is not None:
                        self._forget(item[1], item[0])
                    self._queue.task_done()
                    if self._queue.unfinished_tasks == 0:
                        self._idle.set()

    def _forget(self, user_id: str, job_id: str) -> None:
        """Drop a finished job from the user's active list; the caller holds ``_pending_lock``."""
        active = self._active.get(user_id, [])
        if job_id in active:
            active.remove(job_id)
        if not active:
            self._active.pop(user_id, None)

    def _execute(self, job_id: str, user_id: str, force: bool) -> None:
        started = time.perf_counter()
        try:
            self._store.update_job(job_id, status="running", started_at=datetime.now(UTC))
            outcome = self._train(user_id, force)
        except TrainingRejectedError as exc:
            self._finish(job_id, "skipped", started, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - the job row reports it; the worker must survive
            logger.exception("training job %s for user %r failed", job_id, user_id)
            self._finish(job_id, "failed", started, error=f"{type(exc).__name__}: {exc}"[:500])
        else:
            self._finish(
                job_id,
                "succeeded",
                started,
                events_used=outcome.events_used,
                adapter_version=outcome.adapter_version,
                metrics=outcome.metrics,
            )

    def _finish(self, job_id: str, status: str, started: float, **fields: object) -> None:
        TRAINING_JOBS.labels(outcome=status).inc()
        try:
            self._store.update_job(
                job_id,
                status=status,
                finished_at=datetime.now(UTC),
                duration_seconds=round(time.perf_counter() - started, 4),
                **fields,
            )
        except Exception:  # noqa: BLE001 - losing the row update must not kill the worker
            logger.exception("could not record the outcome of training job %s", job_id)
