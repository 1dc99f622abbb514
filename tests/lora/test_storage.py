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


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import torch
    from tests.lora.conftest import make_world
    from sona.lora import DirectoryAdapterStore, UserAdapter, UserAdapterConfig
    cfg = UserAdapterConfig(storage_dtype="float32")
    world = make_world()
    store = DirectoryAdapterStore({root!r})
    w = UserAdapter(world.scorer, cfg).create("alice")
    for m in w.lora_B:
        w.lora_B[m] = torch.full_like(w.lora_B[m], 2.0)
    real_fsync, calls = os.fsync, [0]
    def fsync(fd):
        calls[0] += 1
        if calls[0] == {kill_at}:
            open({marker!r}, "w").close()
            time.sleep(600)  # the parent SIGKILLs us here, mid-save
        real_fsync(fd)
    os.fsync = fsync
    store.save(w, cfg)
    """
)


@pytest.mark.parametrize("kill_at", [1, 2, 4])
def test_atomic_save_survives_sigkill_mid_write(world: World, tmp_path: Path, kill_at: int) -> None:
    root = tmp_path / "adapters"
    store = DirectoryAdapterStore(root)
    store.save(_weights(world, "alice", 1.0), CFG)  # v1, complete
    marker = tmp_path / "in-fsync"
    code = _CHILD.format(
        tests=str(ROOT / "tests" / "lora"), root=str(root), kill_at=kill_at, marker=str(marker)
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
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
    assert store.versions("alice") == [1]  # no readable half adapter
    assert float(store.load("alice").lora_B["fc1"][0, 0]) == 1.0  # the previous version still loads
    assert store.save(_weights(world, "alice", 3.0), CFG) == 2  # and saving works again


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
