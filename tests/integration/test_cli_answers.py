"""The CLI tells the truth: usage errors exit 2 before anything changes, failures are one line, help is whole.

Real processes where the output a person sees matters (tracebacks, exit
codes); typer's runner where only the command's result does.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving._auth import SERVICE_SCOPE, decode_token
from serving.cli import app
from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic
from tests.integration.conftest import ROOT, base_env
from tests.integration.test_cli import COMMANDS

SYNTAX = "synthetic[:USERS[xITEMS]]"


def _sona(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving.cli", *args],
        cwd=ROOT,
        env={**base_env(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_url_in_a_missing_directory_is_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    out = _sona(["db", "upgrade", "--url", f"sqlite:///{missing / 'x.db'}"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "no").exists()
    # DATABASE_URL is held to the same rule by the commands that open it
    fit = _sona(
        ["fit", "--data", "synthetic:20x30", "--epochs", "1"],
        tmp_path,
        DATABASE_URL=f"sqlite:///{missing / 'x.db'}",
    )
    assert fit.returncode == 2 and not (tmp_path / "no").exists(), fit.stderr


def test_unknown_revision_is_one_line_unless_debug(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert _sona(["db", "upgrade", "--url", url], tmp_path).returncode == 0
    out = _sona(["db", "downgrade", "bogusrev", "--url", url], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "bogusrev" in out.stderr and "Traceback" not in out.stderr
    debug = _sona(["db", "downgrade", "bogusrev", "--url", url, "--debug"], tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_serve_on_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _sona(["serve", "--port", str(port)], tmp_path, JWT_SECRET="s" * 32)
    assert out.returncode == 2, out.stderr
    assert f"127.0.0.1:{port}" in out.stderr and "in use" in out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0


def test_train_adapters_with_a_file_of_unknown_users_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("DATABASE_URL", "SONA_MODEL_DIR", "KAFKA_BROKERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SONA_DATA_DIR", str(tmp_path))
    catalog, events = generate_synthetic(SyntheticConfig(n_items=40, n_users=20, seed=1))
    Sona(catalog, SonaConfig(epochs=1, dim=8, hidden_dim=16, progress=False)).fit(events).save(
        tmp_path / "model"
    )
    wrong = tmp_path / "README.md"
    wrong.write_text("# a project\n\nSome prose, not user ids.\nAnother line.\n")
    result = CliRunner().invoke(app, ["train-adapters", "--users", str(wrong), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "names no user the model knows" in result.output
    assert not (tmp_path / "runs").exists()  # nothing started


def test_help_is_complete(tmp_path: Path) -> None:
    """At a narrow terminal, where cutting text off would be most tempting."""
    texts = {}
    for command in COMMANDS:
        out = _sona([*command, "--help"], tmp_path, COLUMNS="60")
        assert out.returncode == 0, out.stderr
        assert "…" not in out.stdout and "..." not in out.stdout.replace("[ARGS]...", ""), out.stdout
        texts[" ".join(command)] = "".join(out.stdout.split())  # undo wrapping, split words too
    assert "derivedfrom--users/--since/--limit." in texts["train-adapters"]
    assert "$SONA_DATA_DIR/runs." in texts["train-adapters"]
    assert SYNTAX in texts["evaluate"] and SYNTAX in texts["fit"]


def test_one_spelling_of_the_synthetic_syntax(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert SYNTAX in readme
    assert not re.findall(r"synthetic\[:USERS(?!\[xITEMS\]\])", readme)
    out = _sona(["fit", "--data", "synthetic:lots"], tmp_path)
    assert out.returncode == 2 and SYNTAX in out.stderr, out.stderr


def test_token_for_a_user_and_for_a_service(tmp_path: Path) -> None:
    secret = "x" * 32
    user = _sona(["token", "viewer-7"], tmp_path, JWT_SECRET=secret)
    assert user.returncode == 0, user.stderr
    principal = decode_token(user.stdout.strip(), secret)
    assert principal.user_id == "viewer-7" and not principal.is_service
    svc = _sona(["token", "--service", "--ttl", "60"], tmp_path, JWT_SECRET=secret)
    assert svc.returncode == 0, svc.stderr
    assert SERVICE_SCOPE in decode_token(svc.stdout.strip(), secret).scopes


def test_token_uses_the_quickstart_dev_secret_only_in_dev_mode(tmp_path: Path) -> None:
    refused = _sona(["token", "u1"], tmp_path)
    assert refused.returncode == 2 and "JWT_SECRET" in refused.stderr and not refused.stdout
    first = _sona(["token", "u1"], tmp_path, SONA_DEV_MODE="1")  # creates the deployment's dev secret
    assert first.returncode == 0, first.stderr
    dev = tmp_path / "dev-jwt-secret"
    assert dev.stat().st_mode & 0o777 == 0o600
    assert decode_token(first.stdout.strip(), dev.read_text().strip()).user_id == "u1"
    dev.write_text("d" * 43)
    assert _sona(["token", "u1"], tmp_path).returncode == 2  # dev mode off: the file is not used
    minted = _sona(["token", "u1"], tmp_path, SONA_DEV_MODE="1")
    assert minted.returncode == 0, minted.stderr
    assert decode_token(minted.stdout.strip(), "d" * 43).user_id == "u1"
    assert _sona(["token"], tmp_path, JWT_SECRET="x" * 32).returncode == 2  # no subject, no --service
