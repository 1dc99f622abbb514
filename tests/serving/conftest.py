"""Fixtures of the HTTP service tests: one small synthetic engine, a state per test, a client.

The engine is fitted once per session on a tiny synthetic dataset and saved;
each test loads its own copy, so a test that observes events or trains an
adapter cannot leak into another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from starlette.testclient import TestClient

from serving._api import create_app
from serving._auth import SERVICE_SCOPE, issue_token
from serving._state import ServiceState
from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.lora import DirectoryAdapterStore
from sona.storage import Storage

SECRET = "test-secret-0123456789abcdef0123"
DATA = SyntheticConfig(n_items=150, n_users=40, events_per_user=25.0, seed=7)


@dataclass(frozen=True)
class FittedEngine:
    directory: Path
    events: pd.DataFrame


def small_config() -> SonaConfig:
    return SonaConfig(epochs=2, dim=16, hidden_dim=32, progress=False, seed=0)


@pytest.fixture(scope="session")
def fitted_engine(tmp_path_factory: pytest.TempPathFactory) -> FittedEngine:
    catalog, events = generate_synthetic(DATA)
    directory = tmp_path_factory.mktemp("engine")
    Sona(catalog, config=small_config()).fit(events).save(directory)
    return FittedEngine(directory=directory, events=events)


@pytest.fixture
def engine(fitted_engine: FittedEngine) -> Sona:
    return Sona.load(fitted_engine.directory)


def make_state(url: str, engine: Sona, events: pd.DataFrame, adapter_dir: Path) -> ServiceState:
    storage = Storage(url)
    storage.upgrade()
    storage.upsert_content(engine.catalog)
    storage.add_events(events)
    store = DirectoryAdapterStore(adapter_dir, storage=storage)
    return ServiceState(engine=engine, storage=storage, jwt_secret=SECRET, adapter_store=store).start()


@pytest.fixture
def state(
    sqlite_url: str, engine: Sona, fitted_engine: FittedEngine, tmp_path: Path
) -> Iterator[ServiceState]:
    st = make_state(sqlite_url, engine, fitted_engine.events, tmp_path / "adapters")
    yield st
    st.stop()
    st.storage.dispose()


@pytest.fixture
def db_state(
    database_url: str, engine: Sona, fitted_engine: FittedEngine, tmp_path: Path
) -> Iterator[ServiceState]:
    """Like ``state``, once on SQLite and once on PostgreSQL."""
    st = make_state(database_url, engine, fitted_engine.events, tmp_path / "adapters")
    yield st
    st.stop()
    st.storage.dispose()


@pytest.fixture
def client(state: ServiceState) -> TestClient:
    return TestClient(create_app(state), raise_server_exceptions=False)


@pytest.fixture
def db_client(db_state: ServiceState) -> TestClient:
    return TestClient(create_app(db_state), raise_server_exceptions=False)


@pytest.fixture
def auth() -> Callable[..., dict[str, str]]:
    def headers(user_id: str, *, service: bool = False) -> dict[str, str]:
        scopes = (SERVICE_SCOPE,) if service else ()
        return {"Authorization": f"Bearer {issue_token(user_id, SECRET, scopes=scopes)}"}

    return headers


@pytest.fixture
def known_user(fitted_engine: FittedEngine) -> str:
    counts = fitted_engine.events["user_id"].value_counts()
    return str(counts.index[0])
