"""Fixtures for discovery: one loaded MiniLM per session and a small synthetic catalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sona import Catalog
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.search import GenreAffinityPersonalizer, MiniLMEmbedder, SearchIndex

FAN = "horror-fan"


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    """The real all-MiniLM-L6-v2, loaded once (about 5 s) and shared by every test."""
    import torch

    torch.set_num_threads(1)
    emb = MiniLMEmbedder()
    emb.encode(["warm up"])
    return emb


@pytest.fixture(scope="session")
def synthetic() -> tuple[Catalog, pd.DataFrame]:
    catalog, events = generate_synthetic(SyntheticConfig(n_items=400, n_users=40, events_per_user=15, seed=7))
    horror = [it.content_id for it in catalog if "Horror" in it.genres][:40]
    fan = pd.DataFrame(
        {
            "user_id": FAN,
            "content_id": horror,
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(horror)), "h"),
            "completion_rate": 1.0,
            "rating": 5.0,
            "dismissed": False,
        }
    )
    return catalog, pd.concat([events, fan], ignore_index=True)


@pytest.fixture(scope="session")
def personalizer(synthetic: tuple[Catalog, pd.DataFrame]) -> GenreAffinityPersonalizer:
    catalog, events = synthetic
    return GenreAffinityPersonalizer().fit(events, catalog)


@pytest.fixture(scope="session")
def index(
    embedder: MiniLMEmbedder, synthetic: tuple[Catalog, pd.DataFrame], personalizer: GenreAffinityPersonalizer
) -> SearchIndex:
    return SearchIndex(embedder, personalizer=personalizer).fit(synthetic[0])
