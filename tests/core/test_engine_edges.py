"""Engine edge cases on small synthetic catalogs: duplicates, exhausted candidates, races, bad input."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

import sona

SMALL = sona.SonaConfig(epochs=2, batch_size=64, dim=16, hidden_dim=32, progress=False, seed=3)


def _synthetic(n_items: int, n_users: int = 30) -> tuple[sona.Catalog, pd.DataFrame]:
    cfg = sona.datasets.SyntheticConfig(n_items=n_items, n_users=n_users, events_per_user=10, seed=5)
    return sona.datasets.generate_synthetic(cfg)


@pytest.fixture(scope="module")
def small() -> tuple[sona.Sona, pd.DataFrame]:
    """A fitted engine over 40 titles and the events it was fitted on (read-only)."""
    catalog, events = _synthetic(40)
    return sona.Sona(catalog, SMALL).fit(events), events


def _event(user: str, content: str, day: int = 1) -> sona.ViewingEvent:
    return sona.ViewingEvent(
        user_id=user, content_id=content, timestamp=datetime(2026, 8, day, tzinfo=UTC), completion_rate=0.9
    )


def test_fit_with_duplicate_event_ids_keeps_the_first_and_still_observes() -> None:
    catalog, events = _synthetic(40)
    repeated = events.iloc[:5].assign(completion_rate=0.25)
    engine = sona.Sona(catalog, SMALL).fit(pd.concat([events, repeated], ignore_index=True))
    history = engine.history_
    assert not history["event_id"].duplicated().any()
    kept = history.set_index("event_id").loc[repeated["event_id"], "completion_rate"]
    assert (kept.to_numpy() == events.iloc[:5]["completion_rate"].to_numpy()).all()  # as storage keeps them
    engine.observe([_event("newcomer", "c1")])
    engine.observe([_event(str(events["user_id"].iloc[0]), "c2")])
    assert engine.known_user("newcomer")
    assert len(engine.history_) == len(events) + 2


@pytest.mark.parametrize("diversity", [0.5, 1.0])
@pytest.mark.parametrize("k", [5, 25, 40])
def test_diversity_never_repeats_or_returns_watched_titles(
    small: tuple[sona.Sona, pd.DataFrame], diversity: float, k: int
) -> None:
    engine, events = small
    for user in events["user_id"].unique()[:5]:
        watched = set(events.loc[events["user_id"] == user, "content_id"])
        ids = [r.content_id for r in engine.recommend(user, k, diversity=diversity)]
        assert len(ids) == len(set(ids))
        assert not set(ids) & watched
        assert len(ids) == min(k, len(engine.catalog) - len(watched))
        batch = engine.recommend_batch([user], k, diversity=diversity)
        assert batch["content_id"].tolist() == ids


def test_exploration_slot_with_diversity_is_a_new_title() -> None:
    catalog, events = _synthetic(200, n_users=60)
    config = dataclasses.replace(SMALL, explore_epsilon=1.0)
    engine = sona.Sona(catalog, config).fit(events)
    users = list(events["user_id"].unique())
    explored = engine.recommend_batch(users, 10, diversity=0.8, explore=True)
    plain = engine.recommend_batch(users, 10, diversity=0.8, explore=False)
    assert not explored.duplicated(["user_id", "content_id"]).any()
    assert (explored.groupby("user_id").size() == 10).all()
    assert not explored["content_id"].equals(plain["content_id"])  # some slots did explore


def test_observe_new_users_while_others_read() -> None:
    catalog, events = _synthetic(40)
    engine = sona.Sona(catalog, SMALL).fit(events)
    n_new = 200
    observed = [0]  # observes finished so far
    stop = threading.Event()
    errors: list[BaseException] = []
    titles = list(engine.catalog.ids[:3])

    def write() -> None:
        try:
            for i in range(n_new):
                engine.observe([_event(f"racer{i}", titles[i % 3], day=1 + i % 28)])
                observed[0] = i + 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            stop.set()

    def read(which: int) -> None:
        try:
            while not stop.is_set():
                i = observed[0]  # the user being observed right now, and the last one observed
                for user in (f"racer{i}", f"racer{max(i - 1, 0)}"):
                    if which == 0:
                        engine.recommend(user, 5)
                    elif which == 1:
                        engine.score(user, titles)
                    else:
                        engine.recommend_batch([user, "racer0"], 3)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(engine.known_user(f"racer{i}") for i in range(n_new))


def test_catalog_without_genres_years_or_people_fits() -> None:
    catalog = sona.Catalog([sona.ContentItem(f"i{j}", f"T{j}") for j in range(5)])
    events = pd.DataFrame(
        {
            "user_id": [f"u{i % 3}" for i in range(12)],
            "content_id": [f"i{i % 5}" for i in range(12)],
            "timestamp": pd.date_range("2026-01-01", periods=12, freq="h", tz="UTC"),
            "completion_rate": 0.9,
        }
    )
    engine = sona.Sona(catalog, SMALL).fit(events)
    assert [r.content_id for r in engine.recommend("u0", 3)] == ["i2"]  # u0 watched the other four
    assert len(engine.recommend("newcomer", 3)) == 3


def test_user_ids_must_be_ids(small: tuple[sona.Sona, pd.DataFrame]) -> None:
    engine, events = small
    user = str(events["user_id"].iloc[0])
    with pytest.raises(sona.ValidationError, match="user_ids"):
        engine.recommend_batch(user)
    with pytest.raises(sona.ValidationError, match="user_ids"):
        engine.recommend_batch([user, None])  # type: ignore[list-item]
    for call in (
        lambda: engine.recommend(None),  # type: ignore[arg-type]
        lambda: engine.score(None, ["c1"]),  # type: ignore[arg-type]
        lambda: engine.recommend(""),
    ):
        with pytest.raises(sona.ValidationError, match="user_id"):
            call()
    assert len(engine.recommend_batch(np.array([user]), 3)) == 3


def test_request_arguments_are_checked(small: tuple[sona.Sona, pd.DataFrame]) -> None:
    engine, events = small
    user = str(events["user_id"].iloc[0])
    same = [r.content_id for r in engine.recommend(user, 5, diversity=0.5)]
    assert [r.content_id for r in engine.recommend(user, 5, diversity=np.float32(0.5))] == same
    with pytest.raises(sona.ValidationError, match="context"):
        engine.recommend(user, context="evening")  # type: ignore[arg-type]
    with pytest.raises(sona.ValidationError, match="context"):
        engine.recommend_batch([user], context="evening")  # type: ignore[arg-type]
    with pytest.raises(sona.ValidationError, match="content_ids"):
        engine.score(user, None)  # type: ignore[arg-type]
    assert engine.score(user, "c1").shape == (1,)


def test_reweighted_checks_names_and_values(small: tuple[sona.Sona, pd.DataFrame]) -> None:
    engine = small[0]
    with pytest.raises(sona.ConfigError, match="w_tower"):
        engine.reweighted(w_tower="x")  # type: ignore[arg-type]
    with pytest.raises(sona.ConfigError, match="w_foo"):
        engine.reweighted(w_foo=1.0)
    assert engine.reweighted(w_tower=np.float64(2)).config.w_tower == 2.0


def test_observe_keeps_events_with_blank_ids_apart(small: tuple[sona.Sona, pd.DataFrame]) -> None:
    engine = small[0].reweighted()  # the copy's event log is its own
    before = len(engine.history_)
    blank = pd.DataFrame(
        {
            "event_id": ["", ""],
            "user_id": "blank-ids",
            "content_id": ["c1", "c2"],
            "timestamp": pd.to_datetime(["2026-09-01", "2026-09-02"], utc=True),
            "completion_rate": 0.9,
        }
    )
    engine.observe(blank)
    assert len(engine.history_) == before + 2


def test_observed_returns_a_new_engine_and_leaves_this_one_as_it_was() -> None:
    catalog, events = _synthetic(40)
    engine = sona.Sona(catalog, SMALL).fit(events)
    old_user = str(events["user_id"].iloc[0])
    before = engine.recommend(old_user, 10)
    n_history = len(engine.history_)
    new = [_event("newcomer", "c1"), _event("newcomer", "c2", 2), _event(old_user, "c3", 3)]

    after = engine.observed(new)

    assert after.known_user("newcomer") and not engine.known_user("newcomer")
    assert len(engine.history_) == n_history and len(after.history_) == n_history + 3
    assert engine.recommend(old_user, 10) == before
    # the copy is what observing would give
    engine.observe(new)
    np.testing.assert_array_equal(
        engine.profile("newcomer").preference_vector, after.profile("newcomer").preference_vector
    )
    assert engine.recommend(old_user, 10) == after.recommend(old_user, 10)
