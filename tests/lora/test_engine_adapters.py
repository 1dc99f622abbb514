"""Adapters on a real (small) Sona engine: guards, typed errors, use_adapter switch, lift report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.errors import InsufficientDataError, TrainedTooRecentlyError
from sona.lora import DirectoryAdapterStore, UserAdapterConfig, update_user_adapter


@pytest.fixture(scope="module")
def engine() -> Sona:
    catalog, events = generate_synthetic(SyntheticConfig(n_items=150, n_users=60, events_per_user=30, seed=3))
    return Sona(catalog, SonaConfig(epochs=3, dim=16, hidden_dim=32, progress=False)).fit(events)


def _active_user(engine: Sona) -> str:
    counts = engine.history_.groupby("user_id").size()
    return str(counts.idxmax())


def test_train_adapters_reports_and_use_adapter_false_is_base(engine: Sona, tmp_path: Path) -> None:
    users = [str(u) for u in engine.users_[:20]]
    cfg = UserAdapterConfig(steps=20, lr=2e-2, min_interval_seconds=0)
    base = engine.recommend_batch(users, k=10, use_adapter=False)
    summary = engine.train_adapters(users, config=cfg, store=DirectoryAdapterStore(tmp_path))
    assert set(summary.trained) | set(summary.rejected) | set(summary.skipped) == set(users)
    assert len(summary.metrics) == len(summary.trained) + len(summary.rejected)
    assert (summary.metrics["holdout_adapter"] >= summary.metrics["holdout_base"]).all()  # never worse
    assert summary.trained, "at least one adapter should beat the base on its tail"
    pd.testing.assert_frame_equal(engine.recommend_batch(users, k=10, use_adapter=False), base)
    u = summary.trained[0]
    comp = engine.score_components(u, [it.content_id for it in engine.catalog.items[:50]])
    assert np.abs(comp["adapter_delta"]).max() > 0
    assert ((comp["score"] >= 0) & (comp["score"] <= 1)).all()


def test_min_interval_guard_and_force(engine: Sona, tmp_path: Path) -> None:
    user = _active_user(engine)
    cfg = UserAdapterConfig(steps=5, min_interval_seconds=300)
    store = DirectoryAdapterStore(tmp_path)
    update_user_adapter(engine, user, config=cfg, store=store)
    with pytest.raises(TrainedTooRecentlyError) as err:
        update_user_adapter(engine, user, config=cfg, store=store)
    assert err.value.user_id == user and 0 < err.value.retry_after_seconds <= 300
    again = update_user_adapter(engine, user, config=cfg, store=store, force=True)
    assert user in again.trained or user in again.rejected
    # the guard reads the stored time: an old training no longer blocks
    store.mark_trained(user, datetime.now(UTC) - timedelta(seconds=301))
    for v in store.versions(user):
        store.delete(user, v)
    assert update_user_adapter(engine, user, config=cfg, store=store).skipped == {}


def test_insufficient_data_is_a_typed_error(engine: Sona, tmp_path: Path) -> None:
    cfg = UserAdapterConfig(min_events=10_000)
    user = _active_user(engine)
    with pytest.raises(InsufficientDataError) as err:
        update_user_adapter(engine, user, config=cfg, store=DirectoryAdapterStore(tmp_path))
    assert err.value.user_id == user and err.value.required == 10_000 and err.value.current_count > 0
    with pytest.raises(InsufficientDataError) as unknown:
        update_user_adapter(engine, "nobody-at-all", store=DirectoryAdapterStore(tmp_path))
    assert unknown.value.current_count == 0
    summary = engine.train_adapters([user], config=cfg)  # batch path: reported, not raised
    assert "insufficient data" in summary.skipped[user]
