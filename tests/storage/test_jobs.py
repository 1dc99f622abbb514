"""Training jobs shared by processes: one active job per user, atomic claims, leases."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from sona.errors import TrainingInProgressError
from sona.storage import Storage


def test_a_user_has_one_active_job_across_storage_instances(database_url: str) -> None:
    """The database's unique index decides, not a process: a second Storage (replica) gets the conflict."""
    a, b = Storage(database_url), Storage(database_url)
    a.upgrade()
    first = a.create_job("u1", force=True)
    assert (first.status, first.force, first.attempts, first.lease_owner) == ("queued", True, 0, None)
    with pytest.raises(TrainingInProgressError) as info:
        b.create_job("u1")
    assert (info.value.user_id, info.value.job_id) == ("u1", first.job_id)
    assert b.active_job("u1") == first
    assert b.create_job("u2").status == "queued"  # other users are not affected

    claimed = b.claim_job("worker-b")
    assert claimed is not None and claimed.job_id == first.job_id
    with pytest.raises(TrainingInProgressError):  # running counts as active too
        a.create_job("u1")
    assert b.finish_job(first.job_id, "worker-b", status="succeeded") is not None
    assert a.active_job("u1") is None
    assert a.create_job("u1").job_id != first.job_id  # finished: a new job may be queued
    a.dispose()
    b.dispose()


def test_concurrent_claims_take_each_job_once(database_url: str) -> None:
    """Eight workers on four Storage instances (connection pools) race for 40 jobs."""
    stores = [Storage(database_url) for _ in range(4)]
    stores[0].upgrade()
    jobs = {stores[0].create_job(f"u{i}").job_id for i in range(40)}
    taken: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def work(n: int) -> None:
        store, owner = stores[n % 4], f"w{n}"
        start.wait()
        while (job := store.claim_job(owner)) is not None:
            with lock:
                taken.append((job.job_id, owner))
            assert store.finish_job(job.job_id, owner, status="succeeded") is not None

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts = Counter(job_id for job_id, _ in taken)
    assert set(counts) == jobs and set(counts.values()) == {1}
    assert {j.status for j in stores[0].list_jobs()} == {"succeeded"}
    assert all(j.attempts == 1 for j in stores[0].list_jobs())
    for s in stores:
        s.dispose()


def test_expired_lease_is_recovered_and_a_live_one_is_not(storage: Storage) -> None:
    live = storage.create_job("live")
    assert storage.claim_job("replica-a", lease_seconds=600) == storage.get_job(live.job_id)
    dead = storage.create_job("dead")
    assert (claimed := storage.claim_job("replica-b", lease_seconds=0.2)) is not None
    assert claimed.job_id == dead.job_id and claimed.lease_expires_at is not None

    assert storage.claim_job("replica-c") is None  # both leases still hold
    time.sleep(0.3)
    recovered = storage.claim_job("replica-c")
    assert recovered is not None and recovered.job_id == dead.job_id
    assert (recovered.lease_owner, recovered.attempts, recovered.status) == ("replica-c", 2, "running")
    assert storage.claim_job("replica-c") is None  # the live lease of replica-a is not touched
    assert storage.get_job(live.job_id).lease_owner == "replica-a"

    # The dead worker comes back: it can neither renew nor record an outcome.
    assert storage.renew_lease(dead.job_id, "replica-b") is False
    assert storage.finish_job(dead.job_id, "replica-b", status="succeeded") is None
    assert storage.renew_lease(dead.job_id, "replica-c") is True
    done = storage.finish_job(dead.job_id, "replica-c", status="succeeded", events_used=12)
    assert done is not None and (done.status, done.events_used, done.lease_expires_at) == (
        "succeeded",
        12,
        None,
    )


def test_a_job_abandoned_max_attempts_times_fails(storage: Storage) -> None:
    job = storage.create_job("u1")
    for attempt in (1, 2):
        claimed = storage.claim_job(f"w{attempt}", lease_seconds=0.05, max_attempts=2)
        assert claimed is not None and claimed.attempts == attempt
        time.sleep(0.1)
    assert storage.claim_job("w3", max_attempts=2) is None
    failed = storage.get_job(job.job_id)
    assert failed.status == "failed" and "lease" in (failed.error or "")


def test_migration_keeps_only_the_newest_active_job_per_user(database_url: str) -> None:
    """Before 0002 two replicas could each queue a job for one user; upgrading keeps the newest."""
    storage = Storage(database_url)
    storage.upgrade("0001")
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        for i, user in enumerate(["u1", "u1", "u2"]):
            conn.execute(
                sa.text(
                    "INSERT INTO training_jobs (id, user_id, status, created_at) "
                    "VALUES (:id, :u, 'queued', :t)"
                ),
                {"id": f"job{i}", "u": user, "t": f"2026-01-0{i + 1} 00:00:00"},
            )
    engine.dispose()
    storage.upgrade()
    statuses = {j.job_id: j.status for j in storage.list_jobs()}
    assert statuses == {"job0": "failed", "job1": "queued", "job2": "queued"}
    storage.dispose()
