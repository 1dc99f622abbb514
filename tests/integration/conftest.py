"""Fixtures of the end-to-end tests: an isolated data dir and environment per test.

Each test gets its own ``SONA_DATA_DIR`` (SQLite, model, adapters, checkpoints)
and, where playback is involved, Redis database 11 (flushed first), which only
these tests use, so nothing is shared with other suites or runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import flushed_redis_db

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 11


def base_env(data_dir: Path) -> dict[str, str]:
    """The process environment for a sona command on ``data_dir``: SQLite, no Kafka, offline."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BROKERS", "DATABASE_URL", "SONA_MODEL_DIR"}
    }
    env.update(
        SONA_DATA_DIR=str(data_dir),
        HF_HUB_OFFLINE="1",
        BENTOML_DO_NOT_TRACK="True",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        PYTHONUNBUFFERED="1",
    )
    env.pop("JWT_SECRET", None)
    return env


@pytest.fixture
def private_redis_url(redis_url: str) -> str:
    """``REDIS_URL`` pointed at database 11, flushed."""
    return flushed_redis_db(redis_url, REDIS_DB)
