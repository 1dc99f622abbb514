"""A configuration error ends the process with status 2 and one line naming the variable.

Before, ``sona serve`` without ``JWT_SECRET`` started BentoML, whose worker failed
and was restarted every 10 s forever; a plain ``bentoml serve`` did the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving._launch import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"JWT_SECRET", "SONA_DEV_MODE", "KAFKA_BROKERS"}}
    env.update(
        SONA_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'fail.db'}",
        BENTOML_HOME=str(tmp_path / "bentoml"),
        BENTOML_DO_NOT_TRACK="True",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("extra", "variable"),
    [({}, "JWT_SECRET"), ({"JWT_SECRET": "x" * 32, "KAFKA_PARTITIONS": "zero"}, "KAFKA_PARTITIONS")],
    ids=["no-jwt-secret", "bad-kafka-partitions"],
)
def test_sona_serve_exits_2_with_one_line_naming_the_variable(
    tmp_path: Path, extra: dict[str, str], variable: str
) -> None:
    run = subprocess.run(
        [str(BIN / "sona"), "serve", "--port", str(free_port())],
        env=_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    lines = _error_lines(run.stderr)
    assert len(lines) == 1 and variable in lines[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_a_bentoml_worker_without_jwt_secret_stops_the_server_instead_of_restarting(tmp_path: Path) -> None:
    run = subprocess.run(
        [str(BIN / "bentoml"), "serve", "serving.playback:PlaybackService", "--port", str(free_port())],
        env=_env(tmp_path, SONA_FATAL_FILE=str(tmp_path / "fatal")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,  # the restart loop never ended; a stopped server returns in seconds
    )
    assert "JWT_SECRET" in (tmp_path / "fatal").read_text()
    assert run.stderr.count("error: environment variable JWT_SECRET") == 1, run.stderr[-3000:]
