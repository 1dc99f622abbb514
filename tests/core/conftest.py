"""A small fitted engine on MovieLens-100k, shared by the core tests (few epochs: speed, not quality)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import sona

FAST = sona.SonaConfig(epochs=8, batch_size=256, dim=32, hidden_dim=64, progress=False, seed=7)


@pytest.fixture(scope="session")
def fast_config() -> sona.SonaConfig:
    return FAST


@pytest.fixture(scope="session")
def movielens(movielens_path: Path) -> tuple[sona.Catalog, pd.DataFrame]:
    return sona.datasets.load_movielens(movielens_path)


@pytest.fixture(scope="session")
def fitted_dir(
    movielens: tuple[sona.Catalog, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    catalog, events = movielens
    engine = sona.Sona(catalog, config=FAST).fit(events)
    return engine.save(tmp_path_factory.mktemp("engine") / "model")


@pytest.fixture(scope="session")
def engine(fitted_dir: Path) -> sona.Sona:
    """Read-only shared engine; tests that observe use ``fresh_engine``."""
    return sona.Sona.load(fitted_dir)


@pytest.fixture
def fresh_engine(fitted_dir: Path) -> sona.Sona:
    return sona.Sona.load(fitted_dir)
