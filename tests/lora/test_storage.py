"""Versioned adapter storage: both backends, atomic writes under SIGKILL, corrupt-file fallback."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sona.errors import AdapterCorruptError, UnknownUserError
from sona.lora import (
    AdapterStore,
    AdapterWeights,
    DatabaseAdapterStore,
    DirectoryAdapterStore,
    UserAdapter,
    UserAdapterConfig,
)
from sona.storage import Storage
from tests.lora.conftest import World

CFG = UserAdapterConfig(keep_versions=2, storage_dtype="float32")
ROOT = Path(__file__).resolve().parents[2]


def _weights(world: World, user: str, value: float) -> AdapterWeights:
    w = UserAdapter(world.scorer, CFG).create(user)
    for m in w.lora_B:
        w.lora_B[m] = torch.full_like(w.lora_B[m], value)
    return w


def _check_versions(store: AdapterStore, world: World) -> None:
    for value in (0.1, 0.2, 0.3):
        store.save(_weights(world, "alice", value), CFG)
    assert store.versions("alice") == [2, 3]  # keep_versions=2 pruned v1
    assert float(store.load("alice").lora_B["fc1"][0, 0]) == pytest.approx(0.3)
    assert float(store.load("alice", 2).lora_B["fc1"][0, 0]) == pytest.approx(0.2)
    assert store.rollback("alice") == 2
    assert float(store.load("alice").lora_B["fc1"][0, 0]) == pytest.approx(0.2)
    assert store.last_trained_at("alice") is not None
    with pytest.raises(UnknownUserError):
        store.load("bob")
    assert store.last_trained_at("bob") is None


def test_directory_store_versions_prune_and_rollback(world: World, tmp_path: Path, sqlite_url: str) -> None:
    _check_versions(DirectoryAdapterStore(tmp_path / "plain"), world)
    db = Storage(sqlite_url)
    db.upgrade()
    store = DirectoryAdapterStore(tmp_path / "recorded", storage=db)
    _check_versions(store, world)
    assert [r.version for r in db.list_adapters("alice")] == [2]  # one lora_adapters row per live version


def test_database_store_versions_prune_and_rollback(world: World, database_url: str) -> None:
    db = Storage(database_url)
    db.upgrade()
    _check_versions(DatabaseAdapterStore(db), world)
    rec = db.latest_adapter("alice")
    assert rec is not None and rec.location.startswith("db://") and rec.size_bytes > 0


def test_database_store_shares_adapters_between_processes_views(world: World, database_url: str) -> None:
    db = Storage(database_url)
    db.upgrade()
    writer = UserAdapter(world.scorer, CFG, store=DatabaseAdapterStore(db))
    writer.activate(_weights(world, "carol", 0.05))
    writer.save("carol")
    reader = UserAdapter(world.scorer, CFG, store=DatabaseAdapterStore(Storage(database_url)))
    x = torch.randn(2, world.scorer.tower.fc1.in_features)
    torch.testing.assert_close(
        reader.tower_logits(["carol", "dave"], x), writer.tower_logits(["carol", "dave"], x)
    )


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage_config"])
def test_corrupt_adapter_falls_back_to_base(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    store = DirectoryAdapterStore(tmp_path)
    store.save(_weights(world, "alice", 0.5), CFG)
    vdir = store.version_dir("alice", 1)
    weights_file, config_file = vdir / "adapter_model.safetensors", vdir / "adapter_config.json"
    if damage == "truncate":
        weights_file.write_bytes(weights_file.read_bytes()[:100])
    elif damage == "delete":
        weights_file.unlink()
    else:
        config_file.write_text("{not json")
    with pytest.raises(AdapterCorruptError):
        store.load("alice")
    adapters = UserAdapter(world.scorer, CFG, store=store)
    x = torch.randn(2, world.scorer.tower.fc1.in_features)
    with caplog.at_level(logging.WARNING, logger="sona.lora"):
        out = adapters.tower_logits(["alice", "bob"], x)
    torch.testing.assert_close(out, world.scorer(x), rtol=0, atol=0)
    assert any("alice" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def _stores(kind: str, tmp_path: Path, database_url: str) -> tuple[AdapterStore, Storage]:
    db = Storage(database_url)
    db.upgrade()
    if kind == "directory":
        return DirectoryAdapterStore(tmp_path / "adapters", storage=db), db
    return DatabaseAdapterStore(db), db


@pytest.mark.parametrize("kind", ["directory", "database"])
def test_save_many_stores_every_user_like_save(
    world: World, tmp_path: Path, database_url: str, kind: str
) -> None:
    """A training chunk's adapters go in with one flush / one transaction: same versions,
    rows, pruning and loads as one ``save`` per user."""
    store, db = _stores(kind, tmp_path, database_url)
    users = ["u1", "u2", "u3"]
    for round_ in (1, 2, 3):
        batch = [_weights(world, u, round_ + i / 10) for i, u in enumerate(users)]
        assert store.save_many(batch, CFG) == [round_] * 3
        assert [w.version for w in batch] == [round_] * 3
    for i, u in enumerate(users):
        assert store.versions(u) == [2, 3]  # keep_versions=2
        assert float(store.load(u).lora_B["fc1"][0, 0]) == pytest.approx(3 + i / 10)
        assert [r.version for r in db.list_adapters(u)] == [2, 3]
    assert store.save(_weights(world, "u1", 9.0), CFG) == 4  # single saves continue the numbering


@pytest.mark.parametrize("kind", ["directory", "database"])
def test_save_many_refuses_adapters_of_a_replaced_model(
    world: World, tmp_path: Path, database_url: str, kind: str
) -> None:
    from sona.lora._store import StaleModelError

    store, db = _stores(kind, tmp_path, database_url)
    db.publish_model("model-b", b"archive")
    batch = [_weights(world, u, 0.5) for u in ("u1", "u2")]
    for w in batch:
        w.model_id = "model-a"
    out = store.save_many(batch, CFG)
    assert all(isinstance(o, StaleModelError) for o in out)
    assert store.versions("u1") == [] and db.list_adapters("u2") == []


def test_directory_save_many_isolates_a_failing_user(world: World, tmp_path: Path) -> None:
    from sona.errors import StorageError

    store = DirectoryAdapterStore(tmp_path / "adapters")
    store.root.mkdir()
    store.user_dir("bad").write_text("a file where the user's directory should be")
    out = store.save_many([_weights(world, u, 0.25) for u in ("good", "bad", "also-good")], CFG)
    assert out[0] == 1 and out[2] == 1
    assert isinstance(out[1], StorageError) and "bad" in str(out[1])
    assert float(store.load("also-good").lora_B["fc1"][0, 0]) == pytest.approx(0.25)
    marks = store.mark_trained_many(["good", "bad", "fresh"], when=_now())
    assert marks[0] is None and marks[2] is None and isinstance(marks[1], StorageError)
    assert store.last_trained_at("fresh") is not None


def _now():  # noqa: ANN202 - built when the test runs, not at collection
    from datetime import UTC, datetime

    return datetime.now(UTC)


_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import torch
    import sona.lora._store as st
    from tests.lora.conftest import make_world
    from sona.lora import DirectoryAdapterStore, UserAdapter, UserAdapterConfig
    cfg = UserAdapterConfig(storage_dtype="float32")
    world = make_world()
    store = DirectoryAdapterStore({root!r})
    batch = []
    for u in {users!r}:
        w = UserAdapter(world.scorer, cfg).create(u)
        for m in w.lora_B:
            w.lora_B[m] = torch.full_like(w.lora_B[m], 2.0)
        batch.append(w)
    real_flush, calls = st._flush, [0]
    def flush(*args):
        calls[0] += 1
        if calls[0] == {kill_at}:
            open({marker!r}, "w").close()
            time.sleep(600)  # the parent SIGKILLs us here, mid-save
        real_flush(*args)
    st._flush = flush
    store.save(batch[0], cfg) if len(batch) == 1 else store.save_many(batch, cfg)
    """
)


def _sigkill_at_marker(code: str, marker: Path) -> None:
    """Run ``code`` in a child and SIGKILL it once it has written ``marker``."""
    child = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "child exited before reaching the kill point"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("users", [("alice",), ("alice", "bob")], ids=["save", "save_many"])
@pytest.mark.parametrize("kill_at", [1, 2])
def test_save_survives_sigkill_mid_write(
    world: World, tmp_path: Path, kill_at: int, users: tuple[str]
) -> None:
    """Killed before the new files are flushed (1) or before the renames are (2): every user
    still reads a whole version, the old one or the new one, never a half adapter."""
    root = tmp_path / "adapters"
    store = DirectoryAdapterStore(root)
    for u in users:
        store.save(_weights(world, u, 1.0), CFG)  # v1, complete
    marker = tmp_path / "in-flush"
    tests = str(ROOT / "tests" / "lora")
    _sigkill_at_marker(
        _CHILD.format(tests=tests, root=str(root), users=users, kill_at=kill_at, marker=str(marker)), marker
    )
    for u in users:
        expected = [1] if kill_at == 1 else [1, 2]  # the renames ran before the second flush
        assert store.versions(u) == expected
        assert float(store.load(u).lora_B["fc1"][0, 0]) == (1.0 if kill_at == 1 else 2.0)
        assert store.save(_weights(world, u, 3.0), CFG) == expected[-1] + 1  # and saving works again
