"""The engine's split: a frozen fitted model named by its id, per-user state that can be forgotten,
adapters attached through a public method and dropped by a refit."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sona
from sona.engine import read_model_id
from sona.lora import UserAdapter, UserAdapterConfig, attach_adapters


def _views(user: str, items: list[str], prefix: str) -> pd.DataFrame:
    t0 = datetime(1998, 6, 1, tzinfo=UTC)
    return pd.DataFrame(
        {
            "event_id": [f"{prefix}-{user}-{i}" for i in range(len(items))],
            "user_id": user,
            "content_id": items,
            "timestamp": [t0 + timedelta(hours=i) for i in range(len(items))],
            "completion_rate": 1.0,
            "rating": 5.0,
        }
    )


def _horror(engine: sona.Sona, n: int) -> list[str]:
    return [it.content_id for it in engine.catalog if "Horror" in it.genres][:n]


def test_the_fitted_model_is_frozen_and_named_by_the_saved_id(engine: sona.Sona, fitted_dir: Path) -> None:
    model = engine.model_
    assert model.model_id == engine.model_id_ == read_model_id(fitted_dir)
    assert model.model_id == model.content_hash()  # the id is the hash of what the model holds
    assert model.scorer is engine.scorer_ and model.calibration is engine.calibration_
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.model_id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="read-only"):
        engine.scorer_ = None  # type: ignore[assignment]
    unfitted = sona.Sona(engine.catalog)
    assert not hasattr(unfitted, "model_") and not hasattr(unfitted, "scorer_")


def test_observe_changes_user_state_never_the_model(fresh_engine: sona.Sona) -> None:
    model = fresh_engine.model_
    fresh_engine.observe(_views("1", _horror(fresh_engine, 5), "obs"))
    assert fresh_engine.model_ is model
    copy = fresh_engine.reweighted(w_content=2.0)
    assert copy.model_id_ == fresh_engine.model_id_ and copy.model_.config.w_content == 2.0
    assert copy.model_.scorer is model.scorer  # weight variants share the learned parts


@pytest.mark.parametrize("merged", [False, True], ids=["appended", "after-a-merge"])
def test_forget_users_reverts_them_to_what_the_model_was_fitted_with(
    engine: sona.Sona, fresh_engine: sona.Sona, merged: bool
) -> None:
    ids = list(engine.catalog.ids[:300])
    horror = _horror(engine, 12)
    n_users, n_events = len(engine.users_), len(engine.history_)
    fresh_engine.observe(_views("1", horror, "a"))
    further = engine.user_history("1").iloc[[0]].assign(completion_rate=1.0, watch_seconds=1e6)
    fresh_engine.observe(further, on_conflict="max_progress")  # a fitted event replaced
    fresh_engine.observe(_views("newbie", horror, "b"))
    fresh_engine.observe(_views("2", horror, "c"))
    assert not np.array_equal(fresh_engine.score("1", ids), engine.score("1", ids))
    assert fresh_engine.known_user("newbie")
    if merged:
        assert len(fresh_engine.history_) == n_events + 3 * len(horror)  # the log merges its appends

    fresh_engine.forget_users(["1", "newbie", "never-seen"])

    np.testing.assert_array_equal(fresh_engine.score("1", ids), engine.score("1", ids))
    pd.testing.assert_frame_equal(
        fresh_engine.recommend_batch(["1", "newbie", "3"], k=10),
        engine.recommend_batch(["1", "newbie", "3"], k=10),
    )
    assert not fresh_engine.known_user("newbie")
    assert fresh_engine.user_history("newbie").empty
    pd.testing.assert_frame_equal(fresh_engine.user_history("1"), engine.user_history("1"))
    # user "2" was not forgotten: its events stay
    assert len(fresh_engine.users_) == n_users and len(fresh_engine.history_) == n_events + len(horror)
    assert not np.array_equal(fresh_engine.score("2", ids), engine.score("2", ids))
    fresh_engine.observe(_views("newbie", horror[:3], "d"))  # a forgotten user can come back
    assert fresh_engine.known_user("newbie") and len(fresh_engine.user_history("newbie")) == 3
    with pytest.raises(sona.ValidationError):
        fresh_engine.forget_users("1")  # one string, not a list of ids


def test_adapters_attach_through_the_engine_and_only_to_their_model(fresh_engine: sona.Sona) -> None:
    cfg = UserAdapterConfig(min_events=5, steps=5)
    adapters = attach_adapters(fresh_engine, config=cfg)
    assert fresh_engine.adapters_ is adapters and adapters.model_id == fresh_engine.model_id_
    fresh_engine.detach()
    assert fresh_engine.adapters_ is None
    foreign = UserAdapter(fresh_engine.scorer_, cfg, model_id="not-this-model")
    with pytest.raises(sona.ConfigError, match="not-this-model"):
        fresh_engine.attach(foreign)
    assert fresh_engine.adapters_ is None


def test_fit_drops_the_previous_models_adapters() -> None:
    catalog, events = sona.datasets.generate_synthetic(
        sona.datasets.SyntheticConfig(n_items=80, n_users=40, events_per_user=12, seed=1)
    )
    cfg = sona.SonaConfig(epochs=1, dim=8, hidden_dim=16, progress=False, calibration="off", seed=0)
    engine = sona.Sona(catalog, cfg).fit(events)
    first = engine.model_id_
    attach_adapters(engine, config=UserAdapterConfig(min_events=5, steps=5))
    assert engine.adapters_ is not None
    engine.fit(events.iloc[: len(events) // 2])
    assert engine.adapters_ is None and engine.model_id_ != first
