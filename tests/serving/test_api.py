"""Every endpoint and status code of the SONA API, in-process through the ASGI app."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from serving._launch import free_port
from serving._state import ServiceState
from tests.serving.conftest import FittedEngine

Auth = Callable[..., dict[str, str]]
RECS = "/api/v1/recommendations"
SCORE = "/api/v1/personalization/score"
UPDATE = "/api/v1/profile/update"
TRAIN = "/api/v1/lora/train"


def events_for(catalog_ids: list[str], n: int, *, start: int = 0) -> list[dict[str, object]]:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return [
        {
            "content_id": catalog_ids[(start + i) % len(catalog_ids)],
            "timestamp": (t0 + timedelta(hours=i)).isoformat(),
            "completion_rate": 0.9,
            "watch_seconds": 3000,
            "rating": 5,
        }
        for i in range(n)
    ]


def wait_for_job(client: TestClient, job_id: str, headers: dict[str, str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/lora/jobs/{job_id}", headers=headers).json()
        if job["status"] in {"succeeded", "failed", "skipped"}:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


# -- recommendations ------------------------------------------------------------------------------


def test_recommendations_for_a_known_user(
    client: TestClient, auth: Auth, known_user: str, state: ServiceState
) -> None:
    r = client.post(RECS, json={"user_id": known_user, "limit": 7}, headers=auth(known_user))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["recommendations"]) == 7
    expected = state.engine.recommend(known_user, k=7)
    assert [rec["content_id"] for rec in body["recommendations"]] == [e.content_id for e in expected]
    assert [rec["recommendation_type"] for rec in body["recommendations"]] == [
        str(e.recommendation_type) for e in expected
    ]
    assert body["ttl_seconds"] > 0
    assert datetime.fromisoformat(body["generated_at"]).tzinfo is not None
    for rec in body["recommendations"]:
        assert 0.0 <= rec["confidence_score"] <= 1.0
        assert rec["content_id"] and rec["recommendation_type"] and isinstance(rec["based_on"], list)
        assert isinstance(rec["explanation"], str)


def test_default_limit_is_20(client: TestClient, auth: Auth, known_user: str) -> None:
    r = client.post(RECS, json={"user_id": known_user}, headers=auth(known_user))
    assert len(r.json()["recommendations"]) == 20


def test_exclude_watched_is_honoured(
    client: TestClient, auth: Auth, known_user: str, fitted_engine: FittedEngine
) -> None:
    ev = fitted_engine.events
    watched = set(ev.loc[ev["user_id"] == known_user, "content_id"])
    excluded = client.post(RECS, json={"user_id": known_user, "limit": 100}, headers=auth(known_user)).json()
    assert not watched & {r["content_id"] for r in excluded["recommendations"]}
    kept = client.post(
        RECS, json={"user_id": known_user, "limit": 100, "exclude_watched": False}, headers=auth(known_user)
    ).json()
    assert watched & {r["content_id"] for r in kept["recommendations"]}


def test_unknown_user_gets_cold_start(client: TestClient, auth: Auth, state: ServiceState) -> None:
    r = client.post(RECS, json={"user_id": "brand-new", "limit": 5}, headers=auth("brand-new"))
    assert r.status_code == 200, r.text
    recs = r.json()["recommendations"]
    assert len(recs) == 5
    assert {rec["recommendation_type"] for rec in recs} == {"cold_start"}
    assert [rec["content_id"] for rec in recs] == [
        e.content_id for e in state.engine.recommend("brand-new", k=5)
    ]


def test_context_and_diversity_are_accepted(client: TestClient, auth: Auth, known_user: str) -> None:
    body = {
        "user_id": known_user,
        "limit": 10,
        "diversity_threshold": 0.5,
        "context": {
            "mood": "excited",
            "time_of_day": "evening",
            "device_type": "tv",
            "viewing_with": "family",
        },
    }
    r = client.post(RECS, json=body, headers=auth(known_user))
    assert r.status_code == 200, r.text
    assert len(r.json()["recommendations"]) == 10


def test_diversity_threshold_reaches_the_engine(
    client: TestClient, auth: Auth, known_user: str, state: ServiceState
) -> None:
    def ids(diversity: float) -> list[str]:
        body = {"user_id": known_user, "limit": 10, "diversity_threshold": diversity}
        r = client.post(RECS, json=body, headers=auth(known_user))
        assert r.status_code == 200, r.text
        return [rec["content_id"] for rec in r.json()["recommendations"]]

    diverse = ids(0.9)
    assert diverse == [e.content_id for e in state.engine.recommend(known_user, k=10, diversity=0.9)]
    assert diverse != ids(0.0)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"diversity_threshold": 1.5}, "diversity_threshold"),
        ({"context": {"weather": "rain"}}, "context.weather"),
        ({"limt": 5}, "limt"),
        ({"user_id": ""}, "user_id"),
    ],
)
def test_bad_recommendation_requests_are_422_naming_the_field(
    client: TestClient, auth: Auth, known_user: str, patch: dict[str, object], field: str
) -> None:
    r = client.post(RECS, json={"user_id": known_user, **patch}, headers=auth(known_user))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert r.json()["error"] == "validation_error"


def test_context_value_the_engine_does_not_know_is_422(
    client: TestClient, auth: Auth, known_user: str
) -> None:
    body = {"user_id": known_user, "context": {"mood": "hangry"}}
    r = client.post(RECS, json=body, headers=auth(known_user))
    assert r.status_code == 422, r.text
    assert "mood" in r.json()["message"]


def test_malformed_json_is_422_not_500(client: TestClient, auth: Auth, known_user: str) -> None:
    headers = {**auth(known_user), "Content-Type": "application/json"}
    r = client.post(RECS, content=b"{not json", headers=headers)
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"


def test_cross_user_is_403_and_service_scope_may_act_for_anyone(
    client: TestClient, auth: Auth, known_user: str
) -> None:
    r = client.post(RECS, json={"user_id": known_user}, headers=auth("someone-else"))
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    ok = client.post(RECS, json={"user_id": known_user}, headers=auth("backend", service=True))
    assert ok.status_code == 200


# -- personalization score ------------------------------------------------------------------------


def test_score_one_and_many(client: TestClient, auth: Auth, known_user: str, state: ServiceState) -> None:
    ids = [str(c) for c in state.engine.catalog.ids[:5]]
    one = client.post(SCORE, json={"user_id": known_user, "content_id": ids[0]}, headers=auth(known_user))
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["content_id"] == ids[0]
    assert 0.0 <= body["score"] <= 1.0
    assert body["components"] and all(isinstance(v, float) for v in body["components"].values())
    many = client.post(SCORE, json={"user_id": known_user, "content_ids": ids}, headers=auth(known_user))
    assert many.status_code == 200, many.text
    scores = many.json()["scores"]
    assert [s["content_id"] for s in scores] == ids
    assert all(0.0 <= s["score"] <= 1.0 for s in scores)
    assert scores[0]["score"] == pytest.approx(body["score"], abs=1e-6)
    np.testing.assert_allclose([s["score"] for s in scores], state.engine.score(known_user, ids), rtol=1e-6)
    assert "score" not in many.json()


def test_score_unknown_content_is_404_with_message(
    client: TestClient, auth: Auth, known_user: str, state: ServiceState
) -> None:
    ids = [str(state.engine.catalog.ids[0]), "no-such-title"]
    r = client.post(SCORE, json={"user_id": known_user, "content_ids": ids}, headers=auth(known_user))
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_content"
    assert "no-such-title" in r.json()["message"]
    assert r.json()["content_ids"] == ["no-such-title"]


@pytest.mark.parametrize(
    "body", [{"user_id": "u"}, {"user_id": "u", "content_id": "1", "content_ids": ["1"]}]
)
def test_score_needs_exactly_one_target(client: TestClient, auth: Auth, body: dict[str, object]) -> None:
    r = client.post(SCORE, json=body, headers=auth("u"))
    assert r.status_code == 422
    assert "exactly one" in r.json()["message"]


def test_score_for_another_user_is_403(client: TestClient, auth: Auth, known_user: str) -> None:
    r = client.post(SCORE, json={"user_id": known_user, "content_id": "1"}, headers=auth("intruder"))
    assert r.status_code == 403


# -- profile update (SQLite and PostgreSQL) -------------------------------------------------------


def test_profile_update_persists_events_and_profile_idempotently(
    db_client: TestClient, db_state: ServiceState, auth: Auth
) -> None:
    ids = [str(c) for c in db_state.engine.catalog.ids]
    body = {"user_id": "newbie", "viewing_events": events_for(ids, 15)}
    r = db_client.post(UPDATE, json=body, headers=auth("newbie"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "updated" and out["user_id"] == "newbie"
    assert out["events_processed"] == 15 and out["duplicates_ignored"] == 0
    assert out["preference_vector_dim"] > 0
    stored = db_state.storage.events_for_users(["newbie"])
    assert len(stored) == 15
    profile = db_state.storage.load_profile("newbie")
    assert profile is not None and profile.preference_vector.shape[0] == out["preference_vector_dim"]
    assert db_state.engine.known_user("newbie")
    np.testing.assert_allclose(
        profile.preference_vector, db_state.engine.profile("newbie").preference_vector, rtol=1e-5
    )

    again = db_client.post(UPDATE, json=body, headers=auth("newbie")).json()
    assert again["events_processed"] == 0 and again["duplicates_ignored"] == 15
    assert len(db_state.storage.events_for_users(["newbie"])) == 15


def test_client_event_ids_are_per_user_keys(
    db_client: TestClient, db_state: ServiceState, auth: Auth
) -> None:
    ids = [str(c) for c in db_state.engine.catalog.ids]
    for user, content in (("alice", ids[0]), ("bob", ids[1])):
        event = {**events_for([content], 1)[0], "event_id": "1"}
        body = {"user_id": user, "viewing_events": [event]}
        out = db_client.post(UPDATE, json=body, headers=auth(user)).json()
        assert out["events_processed"] == 1 and out["duplicates_ignored"] == 0, (user, out)
        retry = db_client.post(UPDATE, json=body, headers=auth(user)).json()
        assert retry["events_processed"] == 0 and retry["duplicates_ignored"] == 1
    stored = db_state.storage.events_for_users(["alice", "bob"])
    assert sorted(zip(stored["user_id"], stored["content_id"], strict=True)) == [
        ("alice", ids[0]),
        ("bob", ids[1]),
    ]
    assert db_state.engine.known_user("alice") and db_state.engine.known_user("bob")


def test_a_blank_client_event_id_is_422(client: TestClient, state: ServiceState, auth: Auth) -> None:
    ids = [str(c) for c in state.engine.catalog.ids]
    event = {**events_for(ids, 1)[0], "event_id": "  "}
    r = client.post(UPDATE, json={"user_id": "blank", "viewing_events": [event]}, headers=auth("blank"))
    assert r.status_code == 422, r.text
    assert not state.engine.known_user("blank")


def test_failed_profile_write_stores_nothing_and_leaves_the_engine_unchanged(
    db_client: TestClient, db_state: ServiceState, auth: Auth
) -> None:
    ids = [str(c) for c in db_state.engine.catalog.ids]
    admin = sa.create_engine(db_state.storage.url)
    with admin.begin() as conn:
        conn.execute(sa.text("DROP TABLE user_profiles"))
    admin.dispose()
    body = {"user_id": "unlucky", "viewing_events": events_for(ids, 12)}
    r = db_client.post(UPDATE, json=body, headers=auth("unlucky"))
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "storage_unavailable"
    assert db_state.storage.events_for_users(["unlucky"]).empty
    assert not db_state.engine.known_user("unlucky")
    recs = db_client.post(RECS, json={"user_id": "unlucky", "limit": 5}, headers=auth("unlucky")).json()
    assert {r["recommendation_type"] for r in recs["recommendations"]} == {"cold_start"}


@pytest.mark.parametrize(
    ("index", "patch", "field"),
    [
        (3, {"completion_rate": 1.5}, "completion_rate"),
        (2, {"completion_rate": "most"}, "completion_rate"),
        (4, {"rating": 9}, "rating"),
        (1, {"timestamp": "2026-03-01T10:00:00"}, "timestamp"),
        (0, {"surprise": 1}, "surprise"),
    ],
)
def test_one_bad_event_rejects_the_whole_batch(
    db_client: TestClient,
    db_state: ServiceState,
    auth: Auth,
    index: int,
    patch: dict[str, object],
    field: str,
) -> None:
    ids = [str(c) for c in db_state.engine.catalog.ids]
    events = events_for(ids, 8)
    events[index] = {**events[index], **patch}
    r = db_client.post(UPDATE, json={"user_id": "careful", "viewing_events": events}, headers=auth("careful"))
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["index"] == index
    assert field in err["field"]
    assert str(index) in err["message"]
    assert db_state.storage.events_for_users(["careful"]).empty
    assert db_state.storage.load_profile("careful") is None


def test_an_unknown_title_in_a_batch_is_404_naming_it_and_writes_nothing(
    db_client: TestClient, db_state: ServiceState, auth: Auth
) -> None:
    # 404 as in /personalization/score: the request is well formed, the title does not exist.
    ids = [str(c) for c in db_state.engine.catalog.ids]
    events = events_for(ids, 8)
    events[5] = {**events[5], "content_id": "not-in-catalog"}
    r = db_client.post(UPDATE, json={"user_id": "careful", "viewing_events": events}, headers=auth("careful"))
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "unknown_content"
    assert r.json()["content_ids"] == ["not-in-catalog"]
    assert db_state.storage.events_for_users(["careful"]).empty


def test_profile_update_for_another_user_is_403_and_writes_nothing(
    client: TestClient, state: ServiceState, auth: Auth
) -> None:
    ids = [str(c) for c in state.engine.catalog.ids]
    r = client.post(
        UPDATE, json={"user_id": "victim", "viewing_events": events_for(ids, 3)}, headers=auth("x")
    )
    assert r.status_code == 403
    assert state.storage.events_for_users(["victim"]).empty


# -- LoRA training jobs (SQLite and PostgreSQL) ---------------------------------------------------


def test_train_with_too_few_events_is_422_with_counts(
    db_client: TestClient, db_state: ServiceState, auth: Auth
) -> None:
    ids = [str(c) for c in db_state.engine.catalog.ids]
    db_client.post(
        UPDATE, json={"user_id": "light", "viewing_events": events_for(ids, 4)}, headers=auth("light")
    )
    r = db_client.post(TRAIN, json={"user_id": "light"}, headers=auth("light"))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "insufficient_data"
    assert r.json()["current_count"] == 4
    assert r.json()["required"] == 10


def test_train_is_queued_then_succeeds_then_409_unless_forced(
    db_client: TestClient, db_state: ServiceState, auth: Auth, known_user: str
) -> None:
    headers = auth(known_user)
    r = db_client.post(TRAIN, json={"user_id": known_user}, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["job_id"]
    job = wait_for_job(db_client, r.json()["job_id"], headers)
    assert job["status"] == "succeeded", job
    assert job["events_used"] >= 10
    assert job["adapter_version"] >= 1
    assert job["duration_seconds"] > 0 and job["error"] is None

    again = db_client.post(TRAIN, json={"user_id": known_user}, headers=headers)
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "trained_too_recently"
    assert 0 < again.json()["retry_after_seconds"] <= 300
    assert int(again.headers["retry-after"]) >= 1

    forced = db_client.post(TRAIN, json={"user_id": known_user, "force": True}, headers=headers)
    assert forced.status_code == 202
    assert wait_for_job(db_client, forced.json()["job_id"], headers)["status"] in {"succeeded", "skipped"}


def test_training_for_another_user_is_403_and_queues_nothing(
    client: TestClient, state: ServiceState, auth: Auth, known_user: str
) -> None:
    r = client.post(TRAIN, json={"user_id": known_user, "force": True}, headers=auth("intruder"))
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden"
    assert state.storage.list_jobs(user_id=known_user) == []


def test_a_second_training_while_one_is_queued_is_409_even_forced(
    db_client: TestClient, db_state: ServiceState, auth: Auth, known_user: str
) -> None:
    headers = auth(known_user)
    db_state.stop()  # the worker is paused, so the first job stays queued
    first = db_client.post(TRAIN, json={"user_id": known_user, "force": True}, headers=headers)
    assert first.status_code == 202, first.text
    for force in (True, False):
        again = db_client.post(TRAIN, json={"user_id": known_user, "force": force}, headers=headers)
        assert again.status_code == 409, again.text
        assert again.json()["error"] == "training_in_progress"
        assert again.json()["job_id"] == first.json()["job_id"]
    assert [j.job_id for j in db_state.storage.list_jobs(user_id=known_user)] == [first.json()["job_id"]]

    db_state.start()
    assert wait_for_job(db_client, first.json()["job_id"], headers)["status"] in {"succeeded", "skipped"}
    after = db_client.post(TRAIN, json={"user_id": known_user, "force": True}, headers=headers)
    assert after.status_code == 202, after.text


def test_jobs_unknown_is_404_and_other_users_job_is_403(
    client: TestClient, auth: Auth, known_user: str
) -> None:
    missing = client.get("/api/v1/lora/jobs/00000000-0000-0000-0000-000000000000", headers=auth(known_user))
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_job"
    job_id = client.post(TRAIN, json={"user_id": known_user}, headers=auth(known_user)).json()["job_id"]
    assert client.get(f"/api/v1/lora/jobs/{job_id}", headers=auth("snoop")).status_code == 403
    assert client.get(f"/api/v1/lora/jobs/{job_id}", headers=auth("ops", service=True)).status_code == 200


# -- health ---------------------------------------------------------------------------------------


def test_ready_when_database_and_model_are_up(db_client: TestClient) -> None:
    r = db_client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "model": "ok"}}


def test_ready_is_503_when_the_database_is_unreachable(state: ServiceState) -> None:
    from serving._api import create_app
    from sona.storage import Storage

    state.storage = Storage(f"postgresql://sona:sona@127.0.0.1:{free_port()}/gone")
    client = TestClient(create_app(state), raise_server_exceptions=False)
    r = client.get("/ready")
    assert r.status_code == 503
    assert r.json()["checks"] == {"database": "unreachable", "model": "ok"}


def test_a_restart_recovers_expired_leases_not_live_ones(
    state: ServiceState, fitted_engine: FittedEngine
) -> None:
    """Queued jobs and those of a dead worker (lease expired) run; a live lease is untouched."""
    state.stop()
    users = [str(u) for u in fitted_engine.events["user_id"].value_counts().index[:3]]
    live = state.storage.create_job(users[0])
    assert state.storage.claim_job("other-replica", lease_seconds=600) is not None
    dead = state.storage.create_job(users[1])
    assert state.storage.claim_job("dead-worker", lease_seconds=0.05) is not None
    queued = state.storage.create_job(users[2])
    time.sleep(0.1)
    state.training = None
    state.start()
    assert state.training is not None and state.training.wait_idle(60)
    assert state.storage.get_job(queued.job_id).status in {"succeeded", "skipped"}
    recovered = state.storage.get_job(dead.job_id)
    assert recovered.status in {"succeeded", "skipped"} and recovered.attempts == 2
    untouched = state.storage.get_job(live.job_id)
    assert (untouched.status, untouched.lease_owner, untouched.attempts) == ("running", "other-replica", 1)


def test_adapter_cache_hits_are_counted(client: TestClient, auth: Auth, known_user: str) -> None:
    from prometheus_client import REGISTRY

    def hits() -> float:
        return REGISTRY.get_sample_value("sona_adapter_cache_total", {"result": "hit"}) or 0.0

    job_id = client.post(TRAIN, json={"user_id": known_user}, headers=auth(known_user)).json()["job_id"]
    assert wait_for_job(client, job_id, auth(known_user))["status"] == "succeeded"
    before = hits()
    client.post(RECS, json={"user_id": known_user}, headers=auth(known_user))
    assert hits() == before + 1
