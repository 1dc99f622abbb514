"""LoRA training jobs: queued in the database, claimed by any worker of any replica.

``POST /lora/train`` inserts a ``queued`` row and returns 202 at once; the
database's unique index refuses a second queued/running job for the same user
(409), whichever replica inserts it. Every worker process runs one
:class:`TrainingQueue` thread that claims the oldest job atomically
(``Storage.claim_job``: ``SELECT ... FOR UPDATE SKIP LOCKED``), holds it under a
lease renewed while it trains, and records the outcome (``succeeded`` /
``skipped`` / ``failed``) only while it still holds the lease. A process that
dies mid-training stops renewing; once the lease expires any worker takes the
job over, and jobs other replicas hold under live leases are never touched.

A BentoML ``@bentoml.task`` was not used: its submit/status routes and ids are
BentoML's own, while the API contract needs our job ids, statuses and guards
(422/409) checked before queueing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from serving._metrics import TRAINING_JOBS
from sona import TrainingRejectedError
from sona.errors import TrainingInProgressError
from sona.storage import TrainingJob

__all__ = ["JobStore", "TrainingInProgressError", "TrainingOutcome", "TrainingQueue", "worker_id"]

logger = logging.getLogger("serving.jobs")


def worker_id() -> str:
    """A lease owner unique to this worker: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    """What one finished training reports back to its job row."""

    events_used: int
    adapter_version: int | None
    metrics: dict[str, float]


class JobStore(Protocol):
    """The part of :class:`sona.storage.Storage` the queue needs."""

    def create_job(self, user_id: str, *, force: bool = False) -> TrainingJob: ...

    def claim_job(
        self, owner: str, *, lease_seconds: float = ..., max_attempts: int = ...
    ) -> TrainingJob | None: ...

    def renew_lease(self, job_id: str, owner: str, *, lease_seconds: float = ...) -> bool: ...

    def finish_job(self, job_id: str, owner: str, **fields: object) -> TrainingJob | None: ...


Trainer = Callable[[str, bool], TrainingOutcome]


class TrainingQueue:
    """One worker thread that claims training jobs from the database and runs them.

    Parameters
    ----------
    store
        Where job rows live (:class:`JobStore`).
    train
        ``train(user_id, force)`` trains and installs one user's adapter.
        A :class:`~sona.TrainingRejectedError` marks the job ``skipped``;
        any other exception marks it ``failed`` with a one-line error.
    lease_seconds
        How long a claim holds without renewal; it is renewed every third of
        that, so a dead worker's job is recovered after at most this long.
    poll_seconds
        How often an idle worker looks for jobs queued by other processes (a
        job submitted through this queue wakes it at once).
    max_attempts
        Claims of a job whose worker keeps dying before it is failed.
    """

    def __init__(
        self,
        store: JobStore,
        train: Trainer,
        *,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        max_attempts: int = 3,
        owner: str | None = None,
    ) -> None:
        self._store = store
        self._train = train
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.owner = owner or worker_id()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._idle = threading.Event()
        # Bumped by every submit: a claim that began before a submit cannot declare the worker idle.
        self._submitted = 0
        self._lock = threading.Lock()

    def start(self) -> TrainingQueue:
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._idle.clear()
            self._thread = threading.Thread(target=self._run, name="sona-lora-training", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Let the running job finish, then end the thread; queued jobs stay ``queued`` for others."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, user_id: str, force: bool) -> str:
        """Record a ``queued`` job for any worker to claim; returns the job id.

        Raises
        ------
        TrainingInProgressError
            The user already has a job queued or running (in any process): one
            at a time per user, so nobody can fill the queue (forced or not).
        """
        job = self._store.create_job(user_id, force=force)
        with self._lock:
            self._submitted += 1
            self._idle.clear()
        self._wakeup.set()
        return job.job_id

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until this worker is running nothing and found nothing to claim."""
        self._wakeup.set()
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            with self._lock:
                seen = self._submitted
            try:
                job = self._store.claim_job(
                    self.owner, lease_seconds=self.lease_seconds, max_attempts=self.max_attempts
                )
            except Exception:  # noqa: BLE001 - a database outage must not end the worker
                logger.exception("could not claim a training job; retrying in %.1f s", self.poll_seconds)
                job = None
            if job is None:
                with self._lock:
                    if seen == self._submitted:
                        self._idle.set()
                self._wakeup.wait(self.poll_seconds)
                continue
            self._idle.clear()
            self._execute(job)

    def _execute(self, job: TrainingJob) -> None:
        started = time.perf_counter()
        done = threading.Event()
        heartbeat = threading.Thread(
            target=self._renew, args=(job.job_id, done), name="sona-lora-lease", daemon=True
        )
        heartbeat.start()
        try:
            outcome = self._train(job.user_id, job.force)
        except TrainingRejectedError as exc:
            self._finish(job, "skipped", started, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - the job row reports it; the worker must survive
            logger.exception("training job %s for user %r failed", job.job_id, job.user_id)
            self._finish(job, "failed", started, error=f"{type(exc).__name__}: {exc}"[:500])
        else:
            self._finish(
                job,
                "succeeded",
                started,
                events_used=outcome.events_used,
                adapter_version=outcome.adapter_version,
                metrics=outcome.metrics,
            )
        finally:
            done.set()
            heartbeat.join()

    def _renew(self, job_id: str, done: threading.Event) -> None:
        """Renew the lease every third of its length until the job is done."""
        while not done.wait(self.lease_seconds / 3):
            try:
                if not self._store.renew_lease(job_id, self.owner, lease_seconds=self.lease_seconds):
                    logger.warning(
                        "lost the lease of training job %s; its outcome will not be recorded", job_id
                    )
                    return
            except Exception:  # noqa: BLE001 - try again next period; the lease may still hold
                logger.exception("could not renew the lease of training job %s", job_id)

    def _finish(self, job: TrainingJob, status: str, started: float, **fields: object) -> None:
        try:
            recorded = self._store.finish_job(job.job_id, self.owner, status=status, **fields)
        except Exception:  # noqa: BLE001 - losing the row update must not kill the worker
            logger.exception("could not record the outcome of training job %s", job.job_id)
            return
        if recorded is None:
            logger.warning(
                "training job %s was taken over by another worker; outcome %s dropped", job.job_id, status
            )
            return
        TRAINING_JOBS.labels(outcome=status).inc()
        logger.info(
            "training job %s for %r: %s in %.2f s",
            job.job_id,
            job.user_id,
            status,
            time.perf_counter() - started,
        )
