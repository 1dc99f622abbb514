"""``sona.tune`` chooses the adapters' settings for new users without letting existing users lose."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import sona
from sona.evaluation import tune
from sona.lora import UserAdapterConfig


def _world(n_users: int = 30, n_items: int = 80, length: int = 24) -> tuple[sona.Catalog, pd.DataFrame]:
    """Users drifting from one genre block of titles to another, with ratings."""
    rng = np.random.default_rng(0)
    genres = ("Drama", "Comedy", "Action", "Horror")
    catalog = sona.Catalog(
        [
            sona.ContentItem(content_id=f"c{i}", title=f"Title {i}", genres=(genres[i % 4],))
            for i in range(n_items)
        ]
    )
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    rows = []
    for u in range(n_users):
        a, b = rng.choice(4, 2, replace=False)
        picked = 0
        for j, i in enumerate(rng.permutation(n_items)):
            want = a if rng.random() > j / n_items else b
            if picked < length and (i % 4 == want or rng.random() < 0.15):
                rows.append((f"u{u}", f"c{i}", t0 + timedelta(days=u, hours=j), float(rng.integers(1, 6))))
                picked += 1
    frame = pd.DataFrame(rows, columns=["user_id", "content_id", "timestamp", "rating"])
    return catalog, frame.assign(completion_rate=1.0)


@pytest.mark.slow  # two small engine fits and ten adapter trainings
def test_adapters_are_chosen_on_new_users_and_never_hurt_existing_ones() -> None:
    catalog, events = _world()
    result = tune(
        catalog,
        events,
        sona.SonaConfig(progress=False, dim=8, hidden_dim=16, epochs=2, seed=0),
        lambdas=(30.0,),
        weights={"w_tower": (1.0,)},
        rounds=1,
    )
    trials = result.trials
    existing = trials[trials["stage"] == "adapters"].set_index("params")
    new = trials[trials["stage"] == "adapters, new users"].set_index("params")
    # every candidate (the library default first) is measured in both regimes
    assert list(existing.index) == list(new.index)
    assert existing.index[0] == "default" and len(existing) >= 2
    chosen = result.adapter_config
    assert isinstance(chosen, UserAdapterConfig)
    default = UserAdapterConfig(min_interval_seconds=0)
    diff = [
        f"{f.name}={getattr(chosen, f.name)!r}"
        for f in fields(chosen)
        if getattr(chosen, f.name) != getattr(default, f.name)
    ]
    name = ", ".join(diff) or "default"
    assert name in existing.index
    safe = existing[(existing["worst_bucket_z"] >= -1.0) & (existing["delta"] >= -existing["se"])]
    if len(safe):
        # safe on existing users, and the best new-user lift less its SE among the safe ones
        assert name in safe.index
        bound = new["delta"] - new["se"]
        assert bound[name] == bound[safe.index].max()
    else:
        assert name == "default"
