"""Adapters belong to a base model; processes follow the database's change feed (in one process here).

The multi-process version (two real replicas, the consumer, the cron job) is
``tests/integration/test_topology.py``; these check the same rules fast.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from sona import Sona, SonaConfig, Storage, ViewingEvent
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.lora import DatabaseAdapterStore, DirectoryAdapterStore, UserAdapterConfig, attach_adapters
from sona.lora._store import StaleModelError
from sona_app.bootstrap import LiveEngine, publish_model, resolve_model
from sona_app.settings import load_settings

CFG = UserAdapterConfig(steps=20, lr=2e-2, min_interval_seconds=0)


@pytest.fixture(scope="module")
def world() -> tuple[object, object]:
    return generate_synthetic(SyntheticConfig(n_items=150, n_users=40, events_per_user=30, seed=5))


def _fit(world: tuple[object, object], seed: int) -> Sona:
    catalog, events = world
    return Sona(catalog, SonaConfig(epochs=2, dim=16, hidden_dim=32, seed=seed, progress=False)).fit(events)


@pytest.fixture(scope="module")
def first(world: tuple[object, object]) -> Sona:
    return _fit(world, 0)


@pytest.fixture(scope="module")
def second(world: tuple[object, object]) -> Sona:
    return _fit(world, 1)


def _event(user: str, title: str, event_id: str) -> list[ViewingEvent]:
    return [ViewingEvent(user_id=user, content_id=title, completion_rate=1.0, event_id=event_id,
                         timestamp=datetime(2030, 1, 1, tzinfo=UTC))]  # fmt: skip


def _titles(engine: Sona) -> list[str]:
    return [it.content_id for it in engine.catalog.items[:60]]


def _delta(engine: Sona, user: str) -> float:
    return float(np.abs(engine.score_components(user, _titles(engine))["adapter_delta"]).max())


def test_model_id_names_the_frozen_model(first: Sona, second: Sona, tmp_path: Path) -> None:
    assert len(first.model_id_) == 32 and first.model_id_ != second.model_id_
    loaded = Sona.load(first.save(tmp_path / "m"))
    assert loaded.model_id_ == first.model_id_
    catalog_first = first.catalog.items[0].content_id
    user = str(first.users_[0])
    observed = first.observed(_event(user, catalog_first, "late-1"))
    assert observed.model_id_ == first.model_id_  # user state is not the model


def test_adapter_of_another_model_is_never_attached(first: Sona, second: Sona, tmp_path: Path) -> None:
    store = DirectoryAdapterStore(tmp_path / "adapters")
    engine = Sona.load(first.save(tmp_path / "m1"))
    users = [str(u) for u in engine.users_[:15]]
    summary = engine.train_adapters(users, config=CFG, store=store)
    assert summary.trained
    user = summary.trained[0]
    assert store.load(user).model_id == engine.model_id_
    assert _delta(engine, user) > 0

    other = Sona.load(second.save(tmp_path / "m2"))
    adapters = attach_adapters(other, config=CFG, store=store)
    assert _delta(other, user) == 0  # counts as missing: the base model serves
    assert adapters.stale_ >= 1

    engine.fit(engine.history_)  # a second fit drops the first model's adapters
    assert engine.adapters_ is None


def test_database_store_refuses_adapters_of_a_model_that_is_not_current(
    first: Sona, second: Sona, tmp_path: Path
) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    storage.upgrade()
    store = DatabaseAdapterStore(storage)
    m2 = publish_model(storage, second.save(tmp_path / "m2"))
    engine = Sona.load(first.save(tmp_path / "m1"))  # a replica that still holds the old model
    users = [str(u) for u in engine.users_[:15]]
    summary = engine.train_adapters(users, config=CFG, store=store)
    assert not summary.trained and summary.failed
    assert all("current model is " + m2 in why for why in summary.failed.values())
    assert all(not storage.list_adapters(u) for u in users)  # nothing stored
    weights = attach_adapters(engine, config=CFG).create(users[0])
    weights.model_id = engine.model_id_
    with pytest.raises(StaleModelError):
        store.save(weights, CFG)
    storage.dispose()


def test_processes_converge_through_the_change_feed(first: Sona, second: Sona, tmp_path: Path) -> None:
    """Two followers on one database (two replicas): events, adapters and a rollout reach both."""
    settings = replace(load_settings({}), data_dir=tmp_path / "data", model_dir=tmp_path / "model")
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    storage.upgrade()
    first.save(settings.engine_dir)
    storage.add_events(first.history_)
    store = DatabaseAdapterStore(storage)
    replicas = []
    for _ in range(2):
        engine = resolve_model(settings, storage)
        assert engine is not None and engine.model_id_ == first.model_id_
        replicas.append(LiveEngine(engine, storage, settings=settings, store=store, adapter_config=CFG))
    a, b = replicas
    assert storage.current_model_id() == first.model_id_

    user = str(first.users_[3])
    top = b.engine.recommend(user, k=3)[0].content_id
    b.ensure_user(user)
    storage.add_events(_event(user, top, "watched-top"))
    b.poll()
    assert top not in [r.content_id for r in b.engine.recommend(user, k=10)]

    users = [str(u) for u in a.engine.users_[:15]]
    trained = a.engine.train_adapters(users, config=CFG, store=store).trained
    assert trained
    lucky = trained[0]
    assert _delta(b.engine, lucky) > 0  # first look-up reads the store
    before = b.engine.score(lucky, _titles(b.engine))
    newer = store.load(lucky)  # another process stores version 2 (here: the same adapter, doubled)
    newer.lora_B = {m: t * 2 for m, t in newer.lora_B.items()}
    assert store.save(newer, CFG) == 2
    b.poll()  # the new version's change row drops the resident one
    after = b.engine.score(lucky, _titles(b.engine))
    assert b.engine.adapters_.packed_.version(lucky) == 2
    assert not np.allclose(before, after)

    publish_model(storage, second.save(tmp_path / "m2"))  # the rollout
    b.poll()
    assert b.engine.model_id_ == second.model_id_ and b.swaps == 1
    assert _delta(b.engine, lucky) == 0  # the old model's adapter does not cross over
    b.ensure_user(user)  # users are re-read into the new engine
    assert top not in [r.content_id for r in b.engine.recommend(user, k=10)]
    storage.dispose()
