"""The ``sona`` command line: help for every command, exit codes, and a resumable adapter run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.cli import app
from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.lora import DirectoryAdapterStore
from sona.storage import Storage
from tests.integration.conftest import ROOT, base_env

COMMANDS = [
    [],
    ["serve"],
    ["consume"],
    ["demo-events"],
    ["token"],
    ["fit"],
    ["train-adapters"],
    ["evaluate"],
    ["db"],
    ["db", "upgrade"],
    ["db", "downgrade"],
    ["db", "current"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "sona")
def test_help_for_every_command(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "--help" in result.output


def test_console_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    for name in ("db", "fit", "train-adapters", "evaluate", "serve", "consume", "demo-events", "token"):
        assert name in result.output


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("DATABASE_URL", "SONA_MODEL_DIR", "KAFKA_BROKERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SONA_DATA_DIR", str(tmp_path))
    return tmp_path


def test_usage_and_config_errors_exit_2(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    missing_model = runner.invoke(app, ["train-adapters", "--no-progress"])
    assert missing_model.exit_code == 2 and "sona fit" in missing_model.output
    both = runner.invoke(app, ["train-adapters", "--users", "x.txt", "--since", "2026-01-01"])
    assert both.exit_code == 2
    bad_data = runner.invoke(app, ["fit", "--data", str(data_dir / "nope")])
    assert bad_data.exit_code == 2 and "MovieLens" in bad_data.output
    monkeypatch.setenv("KAFKA_PARTITIONS", "zero")
    bad_env = runner.invoke(app, ["consume"])
    assert bad_env.exit_code == 2 and "KAFKA_PARTITIONS" in bad_env.output


def test_fit_then_evaluate(data_dir: Path) -> None:
    runner = CliRunner()
    fitted = runner.invoke(app, ["fit", "--data", "synthetic:40x80", "--epochs", "1", "--no-progress"])
    assert fitted.exit_code == 0, fitted.output
    assert Sona.load(data_dir / "model").known_user("u0")
    storage = Storage(f"sqlite:///{data_dir / 'sona.db'}")
    assert len(storage.events_for_users(["u0"])) > 0
    storage.dispose()
    evaluated = runner.invoke(
        app, ["evaluate", "--data", "synthetic:40x80", "--epochs", "1", "--json", "--no-progress"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.output)["metrics"]
    assert set(metrics) == {"sona", "Pop", "ItemKNN", "EASE"}
    assert all(0.0 <= m["ndcg"] <= 1.0 for m in metrics.values())


def _fit_small(data_dir: Path) -> list[str]:
    catalog, events = generate_synthetic(
        SyntheticConfig(n_items=150, n_users=160, events_per_user=25.0, seed=3)
    )
    engine = Sona(catalog, SonaConfig(epochs=1, dim=16, hidden_dim=32, progress=False)).fit(events)
    engine.save(data_dir / "model")
    storage = Storage(f"sqlite:///{data_dir / 'sona.db'}")
    storage.upgrade()
    storage.upsert_content(catalog)
    storage.add_events(events)
    storage.dispose()
    return sorted(map(str, engine.users_))


@pytest.mark.slow
def test_train_adapters_resumes_after_sigint_without_retraining(tmp_path: Path) -> None:
    users = _fit_small(tmp_path)
    env = base_env(tmp_path)
    # --force: without the checkpoint a rerun WOULD retrain finished users (a second adapter version).
    cmd = [
        sys.executable,
        "-m",
        "serving.cli",
        "train-adapters",
        "--force",
        "--chunk-size",
        "4",
        "--no-progress",
    ]
    checkpoints = tmp_path / "runs"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until at least one chunk is recorded
        files = list(checkpoints.glob("*.jsonl"))
        if files and files[0].read_text().count("\n") >= 4:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted" in out
    (partial,) = checkpoints.glob("*.jsonl")
    first = [json.loads(line)["user_id"] for line in partial.read_text().splitlines()]
    assert 4 <= len(first) < len(users)
    store = DirectoryAdapterStore(tmp_path / "adapters")
    versions_before = {u: store.versions(u) for u in first}

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"already done={len(first)}" in rerun.stdout
    summary = rerun.stdout.strip().splitlines()[-1]
    assert summary.startswith("train-adapters done:") and "median held-out lift=" in summary
    assert "seconds=" in summary and "failed=0" in summary
    (done,) = checkpoints.glob("*.done.jsonl")
    recorded = [json.loads(line)["user_id"] for line in done.read_text().splitlines()]
    assert sorted(recorded) == users  # every user exactly once: none retrained, none left out
    assert {u: store.versions(u) for u in first} == versions_before
    assert any(v for v in versions_before.values())  # some finished users did get an adapter
