"""Small synthetic world for LoRA tests: a trained-ish TowerScorer and users with drifting tastes.

Tower inputs are the weighted mean of fixed item feature vectors over a user's
events, so a profile built on older titles differs from one built on all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from sona.models._tower import TowerScorer, UserTower

N_ITEMS, IN_DIM, HIDDEN, DIM = 200, 16, 24, 12


@dataclass
class World:
    scorer: TowerScorer
    item_features: torch.Tensor
    events: pd.DataFrame

    def inputs(self, events: pd.DataFrame, user_ids: list[str]) -> torch.Tensor:
        row = pd.Series(np.arange(len(user_ids)), index=pd.Index(user_ids, dtype=object))
        r = torch.tensor(row.reindex(events["user_id"]).to_numpy(dtype=np.int64))
        items = torch.tensor(events["item"].to_numpy(dtype=np.int64))
        w = torch.tensor(events["weight"].to_numpy(dtype=np.float32))
        out = torch.zeros(len(user_ids), IN_DIM)
        out.index_add_(0, r, self.item_features[items] * w[:, None])
        return torch.nn.functional.normalize(out, dim=1)


def make_world(n_users: int = 12, seed: int = 0) -> World:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tower = UserTower(IN_DIM, HIDDEN, DIM)
    scorer = TowerScorer(tower, N_ITEMS, DIM)
    with torch.no_grad():
        scorer.item_embeddings.copy_(torch.randn(N_ITEMS, DIM, generator=gen) * 0.5)
        scorer.item_bias.copy_(torch.randn(N_ITEMS, generator=gen) * 0.1)
    feats = torch.randn(N_ITEMS, IN_DIM, generator=gen)
    rng = np.random.default_rng(seed)
    rows = []
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    for u in range(n_users):
        n = int(rng.integers(14, 40))
        # taste drifts from one item cluster to another over time
        start, end = rng.choice(N_ITEMS // 20, 2, replace=False) * 20
        for i in range(n):
            base = start if rng.random() > i / n else end
            item = int(base + rng.integers(0, 20))
            rows.append(
                (f"user-{u}", item, t0 + pd.Timedelta(hours=u * 100 + i), float(rng.uniform(0.5, 2.0)))
            )
    ev = pd.DataFrame(rows, columns=["user_id", "item", "timestamp", "weight"]).drop_duplicates(
        ["user_id", "item"]
    )
    ev["content_id"] = ev["item"].astype(str)
    return World(scorer=scorer, item_features=feats, events=ev.reset_index(drop=True))


@pytest.fixture
def world() -> World:
    return make_world()
