"""The single-request path with adapters attached: one base tower pass, adapter-less users untouched."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.lora import DirectoryAdapterStore, UserAdapterConfig


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sona, str, str]:
    """An engine with adapters attached, a user with a resident adapter and one without."""
    catalog, events = generate_synthetic(SyntheticConfig(n_items=120, n_users=40, events_per_user=30, seed=5))
    engine = Sona(catalog, SonaConfig(epochs=2, dim=16, hidden_dim=32, progress=False)).fit(events)
    users = [str(u) for u in engine.users_[:12]]
    cfg = UserAdapterConfig(steps=20, lr=2e-2, min_interval_seconds=0)
    store = DirectoryAdapterStore(tmp_path_factory.mktemp("adapters"))
    summary = engine.train_adapters(users, config=cfg, store=store)
    assert summary.trained, "at least one adapter should beat the base on its tail"
    without = next(str(u) for u in engine.users_ if str(u) not in engine.adapters_)
    return engine, summary.trained[0], without


def _count_calls(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    return calls, module.register_forward_hook(hook)


@pytest.mark.parametrize("which", ["with_adapter", "without_adapter"])
def test_recommend_runs_the_base_tower_once(adapted: tuple[Sona, str, str], which: str) -> None:
    engine, with_adapter, without = adapted
    user = with_adapter if which == "with_adapter" else without
    tower_calls, h1 = _count_calls(engine.scorer_.tower)
    fc1_calls, h2 = _count_calls(engine.scorer_.tower.fc1)
    try:
        engine.recommend(user, k=10)
    finally:
        h1.remove()
        h2.remove()
    assert tower_calls[0] == 1  # the base embedding, computed once per request
    # the adapted pass (fc1 again, with the low-rank term) only for a user who has an adapter
    assert fc1_calls[0] == (2 if which == "with_adapter" else 1)


def test_users_without_adapter_score_exactly_as_base(adapted: tuple[Sona, str, str]) -> None:
    engine, with_adapter, without = adapted
    ids = [it.content_id for it in engine.catalog.items[:60]]
    base = engine.score_components(without, ids, use_adapter=False)
    got = engine.score_components(without, ids)
    for key in ("fused", "score", "adapter_delta"):
        assert (got[key] == base[key]).all(), key
    assert [(r.content_id, r.score) for r in engine.recommend(without, k=10)] == [
        (r.content_id, r.score) for r in engine.recommend(without, k=10, use_adapter=False)
    ]
    # a mixed batch: the adapter-less user's rows are the base rows, the adapted user's differ
    mixed = engine.recommend_batch([with_adapter, without], k=10)
    base_batch = engine.recommend_batch([with_adapter, without], k=10, use_adapter=False)
    pd.testing.assert_frame_equal(
        mixed[mixed.user_id == without].reset_index(drop=True),
        base_batch[base_batch.user_id == without].reset_index(drop=True),
    )
    assert engine.score_components(with_adapter, ids)["adapter_delta"].any()


def test_resident_logits_covers_only_adapter_rows(adapted: tuple[Sona, str, str]) -> None:
    engine, with_adapter, without = adapted
    users = [without, with_adapter, without]
    x = engine.tower_inputs(users)
    rows, logits = engine.adapters_.resident_logits(users, x, engine.scorer_)
    assert rows.tolist() == [1]
    full = engine.adapters_.tower_logits(users, x, engine.scorer_)
    torch.testing.assert_close(logits, full[rows])
    none_rows, none_logits = engine.adapters_.resident_logits([without], x[:1], engine.scorer_)
    assert len(none_rows) == 0 and none_logits.shape == (0, len(engine.catalog))
