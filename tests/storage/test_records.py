"""Round trips of the catalog, profiles, adapter records and blobs, and training jobs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from sona import (
    AdapterRecord,
    Catalog,
    ContentItem,
    DataError,
    Storage,
    StorageError,
    TrainingJob,
    UnknownJobError,
    UserProfile,
    ValidationError,
)


def _item(i: int, **kw: object) -> ContentItem:
    fields: dict[str, object] = {
        "content_id": f"c{i}",
        "title": f"Title {i}",
        "genres": ("Drama", "Sci-Fi")[: 1 + i % 2],
        "release_year": 1990 + i,
        "duration_seconds": 5400.0 if i % 3 else None,
        "popularity": i / 10,
        "overview": f"Story {i}",
        "people": (f"actor{i}", "director0"),
        "metadata": {"rating": "PG", "tags": ["a", i]},
    }
    fields.update(kw)
    return ContentItem(**fields)  # type: ignore[arg-type]


def test_catalog_round_trip_keeps_order_and_fields(storage: Storage) -> None:
    with pytest.raises(DataError, match="empty"):
        storage.load_catalog()
    items = [_item(i) for i in (5, 1, 3)]
    assert storage.upsert_content(Catalog(items)) == 3
    loaded = storage.load_catalog()
    assert list(loaded.ids) == ["c5", "c1", "c3"]
    assert loaded.items == tuple(items)

    # Update one title in place, append a new one: existing positions do not move.
    storage.upsert_content([_item(1, title="Renamed"), _item(9)])
    loaded = storage.load_catalog()
    assert list(loaded.ids) == ["c5", "c1", "c3", "c9"]
    assert loaded["c1"].title == "Renamed"


def test_profiles_round_trip_exactly_and_upsert(storage: Storage) -> None:
    rng = np.random.default_rng(0)
    vec = rng.standard_normal(64).astype(np.float32)
    when = datetime(2026, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
    profile = UserProfile(
        user_id="u1",
        preference_vector=vec,
        genre_affinities={"Drama": np.float32(0.25), "Sci-Fi": 0.75},
        temporal_patterns={"hourly": list(np.full(24, 1 / 24)), "recency_bias": [0.5]},
        interaction_count=12,
        updated_at=when,
    )
    assert storage.save_profiles([profile, UserProfile("u2", np.zeros(64, dtype=np.float32))]) == 2
    back = storage.load_profile("u1")
    assert back is not None
    assert back.preference_vector.dtype == np.float32
    assert back.preference_vector.tobytes() == vec.tobytes()  # bit-exact
    assert back.genre_affinities == {"Drama": 0.25, "Sci-Fi": 0.75}
    assert back.temporal_patterns["hourly"] == pytest.approx([1 / 24] * 24)
    assert (back.interaction_count, back.updated_at) == (12, when)

    storage.save_profiles([UserProfile("u1", vec * 2, interaction_count=13)])
    assert storage.load_profile("u1").interaction_count == 13  # type: ignore[union-attr]
    assert set(storage.load_profiles()) == {"u1", "u2"}
    assert set(storage.load_profiles(["u2", "missing"])) == {"u2"}
    assert storage.load_profile("missing") is None


def test_adapter_records_versions_and_uniqueness(storage: Storage) -> None:
    assert storage.next_adapter_version("u1") == 1
    assert storage.latest_adapter("u1") is None
    rec = storage.record_adapter(
        "u1", 1, rank=4, size_bytes=4096, location="/adapters/u1/v1", metrics={"ndcg": np.float64(0.2)}
    )
    assert isinstance(rec, AdapterRecord)
    assert rec.metrics == {"ndcg": 0.2}
    assert rec.created_at is not None and rec.created_at.tzinfo == UTC
    storage.record_adapter("u1", 2, rank=4, size_bytes=4100, location="/adapters/u1/v2")
    storage.record_adapter("u2", 1, rank=8, size_bytes=9000, location="db://u2/1")

    with pytest.raises(StorageError, match="recording adapter 'u1' v2 failed"):
        storage.record_adapter("u1", 2, rank=4, size_bytes=1, location="elsewhere")
    with pytest.raises(ValidationError, match="version"):
        storage.record_adapter("u1", 0, rank=4, size_bytes=1, location="x")

    assert [r.version for r in storage.list_adapters("u1")] == [1, 2]
    assert storage.latest_adapter("u1").location == "/adapters/u1/v2"  # type: ignore[union-attr]
    assert storage.next_adapter_version("u1") == 3

    assert storage.delete_adapter("u1", 2) is True
    assert storage.delete_adapter("u1", 2) is False
    assert storage.latest_adapter("u1").version == 1  # type: ignore[union-attr]
    assert [r.user_id for r in storage.list_adapters("u2")] == ["u2"]


def test_adapter_blobs_round_trip(storage: Storage) -> None:
    config = json.dumps({"r": 4, "lora_alpha": 8, "target_modules": ["fc1", "fc2"]})
    weights = bytes(range(256)) * 40  # binary, with NUL bytes
    assert storage.get_adapter_blob("u1", 1) is None
    storage.put_adapter_blob("u1", 1, config, weights)
    assert storage.get_adapter_blob("u1", 1) == (config, weights)
    assert storage.next_adapter_version("u1") == 2  # a blob alone reserves its version

    storage.put_adapter_blob("u1", 1, config, b"\x00replaced")  # rewrite is allowed
    assert storage.get_adapter_blob("u1", 1) == (config, b"\x00replaced")

    with storage.transaction() as tx:  # blob + record together, as the database adapter store does
        tx.put_adapter_blob("u1", 2, config, weights)
        tx.record_adapter("u1", 2, rank=4, size_bytes=len(weights), location="db://u1/2")
    storage.delete_adapter("u1", 2)
    assert storage.get_adapter_blob("u1", 2) is None


def test_training_job_lifecycle(storage: Storage) -> None:
    job = storage.create_job("u1")
    assert isinstance(job, TrainingJob)
    assert (job.status, job.started_at, job.done) == ("queued", None, False)
    assert storage.get_job(job.job_id) == job

    running = storage.update_job(job.job_id, status="running")
    assert running.started_at is not None and running.started_at.tzinfo == UTC
    done = storage.update_job(
        job.job_id, status="succeeded", events_used=42, adapter_version=3, metrics={"loss": float("nan")}
    )
    assert done.done and done.finished_at is not None
    assert done.duration_seconds is not None and done.duration_seconds >= 0
    assert (done.events_used, done.adapter_version, done.metrics) == (42, 3, {"loss": None})
    assert storage.last_trained_at("u1") == done.finished_at

    with pytest.raises(DataError, match="already finished"):
        storage.update_job(job.job_id, status="running")
    with pytest.raises(ValidationError, match="status"):
        storage.update_job(storage.create_job("u1").job_id, status="paused")  # type: ignore[arg-type]


def test_unknown_job_is_a_key_error(storage: Storage) -> None:
    with pytest.raises(UnknownJobError) as info:
        storage.get_job("no-such-job")
    assert isinstance(info.value, KeyError)
    assert info.value.job_id == "no-such-job"
    with pytest.raises(KeyError):
        storage.update_job("no-such-job", status="running")


def test_list_jobs_filters(storage: Storage) -> None:
    a = storage.create_job("u1")
    b = storage.create_job("u2")
    storage.update_job(a.job_id, status="skipped")  # one active job per user: a must end first
    c = storage.create_job("u1")
    storage.update_job(b.job_id, status="failed", error="boom")
    assert [j.job_id for j in storage.list_jobs()] == [a.job_id, b.job_id, c.job_id]
    assert [j.job_id for j in storage.list_jobs(user_id="u1")] == [a.job_id, c.job_id]
    failed = storage.list_jobs(status="failed")
    assert [(j.job_id, j.error) for j in failed] == [(b.job_id, "boom")]
    assert storage.list_jobs(user_id="u2", status="queued") == []


def test_last_trained_at_and_timestamps_are_utc(storage: Storage) -> None:
    assert storage.last_trained_at("u1") is None
    plus5 = timezone(timedelta(hours=5))
    made = datetime(2026, 1, 1, 10, 0, tzinfo=plus5)
    rec = storage.record_adapter("u1", 1, rank=4, size_bytes=1, location="x", created_at=made)
    assert rec.created_at == made and rec.created_at.utcoffset() == timedelta(0)
    last = storage.last_trained_at("u1")
    assert last == made and last.tzinfo == UTC  # type: ignore[union-attr]
    job = storage.create_job("u2")
    storage.update_job(job.job_id, status="running")
    done = storage.update_job(job.job_id, status="succeeded")
    storage.record_adapter("u2", 1, rank=4, size_bytes=1, location="x", created_at=made)  # older than the job
    failed = storage.create_job("u3")
    storage.update_job(failed.job_id, status="failed")
    many = storage.last_trained_times(["u1", "u2", "u3", "nobody"])
    assert many == {"u1": made, "u2": done.finished_at}  # failed jobs and unknown users are absent
    assert all(t.tzinfo == UTC for t in many.values())
    with pytest.raises(ValidationError, match="created_at"):
        storage.record_adapter("u1", 2, rank=4, size_bytes=1, location="x", created_at=datetime(2026, 1, 1))


def test_ping_and_health(storage: Storage) -> None:
    assert storage.ping() is True
    assert storage.is_up_to_date()
    storage.dispose()
    assert storage.ping() is True  # the pool reconnects after dispose
