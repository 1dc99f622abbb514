"""Shared fixtures: real services from ``scripts/services.sh``, datasets, temp databases.

A service-backed test asks for its fixture (``postgres_url``, ``redis_url``,
``kafka_brokers``). Without the service configured it skips with a reason;
under ``make test`` (``SONA_REQUIRE_SERVICES=1``) a missing service fails instead,
so nothing silently skips in CI.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = Path(os.environ.get("SONA_MOVIELENS", ROOT.parent / "shared" / "datasets" / "ml-100k"))
MOVIELENS_LATEST = Path(
    os.environ.get("SONA_MOVIELENS_LATEST", ROOT.parent / "shared" / "datasets" / "ml-latest-small")
)


def _need(var: str, what: str) -> str:
    value = os.environ.get(var)
    if value:
        return value
    if os.environ.get("SONA_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required under make test but {var} is not set")
    pytest.skip(f"{what} not configured ({var} unset); run via `make test`")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    return _need("SONA_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = postgres_server_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sona.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sona.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _need("REDIS_URL", "Redis")


def flushed_redis_db(redis_url: str, db: int) -> str:
    """``redis_url`` pointed at database ``db``, emptied first: a test's own sessions and rate counters."""
    import redis

    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    url = f"{base}/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture(scope="session")
def kafka_brokers() -> str:
    return _need("KAFKA_BROKERS", "Kafka broker")


@pytest.fixture(scope="session")
def movielens_path() -> Path:
    if not (MOVIELENS / "ml-100k.inter").exists():
        if os.environ.get("SONA_REQUIRE_SERVICES") == "1":
            pytest.fail(f"MovieLens-100k not found at {MOVIELENS}")
        pytest.skip(f"MovieLens-100k not found at {MOVIELENS}")
    return MOVIELENS


@pytest.fixture(scope="session")
def movielens_latest_path() -> Path:
    """MovieLens latest-small in GroupLens' CSV layout (half stars, tags, ~9.7k titles)."""
    if not (MOVIELENS_LATEST / "ratings.csv").exists():
        if os.environ.get("SONA_REQUIRE_SERVICES") == "1":
            pytest.fail(f"MovieLens latest-small not found at {MOVIELENS_LATEST}")
        pytest.skip(f"MovieLens latest-small not found at {MOVIELENS_LATEST}")
    return MOVIELENS_LATEST
