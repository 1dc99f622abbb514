"""Issue 17: ``sona train-adapters`` split into shards, run as concurrent processes on one PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.cli import app
from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.lora import DatabaseAdapterStore
from sona.storage import Storage
from sona_app.adapter_run import Shard, shard_of
from tests.integration.conftest import ROOT, base_env


def test_shards_partition_any_user_list_stably() -> None:
    users = [f"user-{i}" for i in range(2000)] + ["ünïcode", "", "42"]
    parts = [Shard(i, 3).owns(users) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(users)  # complete, and disjoint (no duplicates)
    assert all(len(p) > 500 for p in parts[:3])
    # BLAKE2b, not hash(): the same in every process, whatever PYTHONHASHSEED says
    other = subprocess.run(
        [sys.executable, "-c", "from sona_app.adapter_run import shard_of; print(shard_of('user-7', 3))"],
        env={**base_env(ROOT), "PYTHONHASHSEED": "123"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(other.stdout) == shard_of("user-7", 3)


def test_bad_shard_options_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONA_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    for args, env in (
        (["--shard", "2/2"], {}),
        (["--shard", "x"], {}),
        (["--shards", "3"], {}),
        ([], {"JOB_COMPLETION_INDEX": "0"}),
        (["--shards", "2"], {"JOB_COMPLETION_INDEX": "2"}),
    ):
        result = runner.invoke(app, ["train-adapters", "--no-progress", *args], env=env)
        assert result.exit_code == 2, (args, env, result.output)
        assert "shard" in result.output.lower() or "JOB_COMPLETION_INDEX" in result.output


@pytest.mark.slow
@pytest.mark.postgres
def test_two_shard_processes_train_every_user_once(tmp_path: Path, postgres_url: str) -> None:
    catalog, events = generate_synthetic(
        SyntheticConfig(n_items=120, n_users=60, events_per_user=25.0, seed=9)
    )
    engine = Sona(catalog, SonaConfig(epochs=1, dim=16, hidden_dim=32, progress=False)).fit(events)
    engine.save(tmp_path / "model")
    storage = Storage(postgres_url)
    storage.upgrade()
    storage.upsert_content(catalog)
    storage.add_events(events)
    users = sorted(map(str, engine.users_))

    env = {**base_env(tmp_path), "DATABASE_URL": postgres_url, "SONA_ADAPTER_STORE": "database"}
    cmd = [
        sys.executable,
        "-m",
        "serving.cli",
        "train-adapters",
        "--force",
        "--no-progress",
        "--chunk-size",
        "8",
    ]
    # shard 0 from the option, shard 1 the way a Kubernetes Indexed Job starts it: environment only
    procs = [
        subprocess.Popen(
            [*cmd, "--shard", "0/2"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ),
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**env, "JOB_COMPLETION_INDEX": "1", "SONA_SHARDS": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ),
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, (out + err).decode()
        assert b"train-adapters done:" in out

    recorded = {}
    for i in range(2):  # one finished checkpoint per shard
        (done,) = (tmp_path / "runs").glob(f"*.shard-{i}-of-2.done.jsonl")
        recorded[i] = [json.loads(line)["user_id"] for line in done.read_text().splitlines()]
        assert all(shard_of(u, 2) == i for u in recorded[i])
        assert len(recorded[i]) == len(set(recorded[i]))
    assert not set(recorded[0]) & set(recorded[1])
    assert sorted(recorded[0] + recorded[1]) == users
    store = DatabaseAdapterStore(storage)
    versions = {u: store.versions(u) for u in users}
    assert all(len(v) <= 1 for v in versions.values())  # --force: a second training would add a version
    assert sum(len(v) for v in versions.values()) > 0
    storage.dispose()
