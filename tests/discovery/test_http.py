"""POST /api/v1/search in-process: auth failure modes, validation, pagination, injection."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from starlette.testclient import TestClient

from serving._auth import issue_token
from serving.discovery import create_app
from sona.search import SearchIndex

SECRET = "discovery-test-secret-0123456789abcdef"
FAN = "horror-fan"


@pytest.fixture(scope="module")
def client(index: SearchIndex) -> TestClient:
    return TestClient(create_app(index, jwt_secret=SECRET), raise_server_exceptions=False)


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _bad_tokens() -> dict[str, str]:
    now = int(time.time())
    return {
        "expired": jwt.encode({"sub": FAN, "iat": now - 7200, "exp": now - 3600}, SECRET, algorithm="HS256"),
        "bad_signature": issue_token(FAN, "another-secret-of-enough-length"),
        "alg_none": _b64({"alg": "none", "typ": "JWT"})
        + "."
        + _b64({"sub": FAN, "iat": now, "exp": now + 60})
        + ".",
        "missing_sub": jwt.encode({"iat": now, "exp": now + 600}, SECRET, algorithm="HS256"),
        "empty_sub": jwt.encode({"sub": " ", "iat": now, "exp": now + 600}, SECRET, algorithm="HS256"),
        "malformed": "not.a.jwt",
        "hs512": jwt.encode({"sub": FAN, "iat": now, "exp": now + 600}, SECRET + "x" * 40, algorithm="HS512"),
    }


def _search(client: TestClient, body: dict[str, object], auth: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": auth} if auth is not None else {}
    return client.post("/api/v1/search", json=body, headers=headers)


def test_anonymous_search_returns_the_documented_shape(client: TestClient) -> None:
    r = _search(client, {"query": "night"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"results", "total_count", "page", "page_size", "facets", "search_time_ms"}
    assert body["page"] == 1 and body["page_size"] == 20 and len(body["results"]) == 20
    hit = body["results"][0]
    assert set(hit) == {
        "content",
        "relevance_score",
        "match_reasons",
        "vector_similarity",
        "keyword_score",
        "personalization_score",
    }
    assert {"id", "title", "overview", "release_year", "genres"} <= set(hit["content"])
    assert hit["personalization_score"] is None and body["personalized"] is False
    assert set(body["facets"]) == {"genres", "years"} and sum(body["facets"]["genres"].values()) > 0


@pytest.mark.parametrize("reason", list(_bad_tokens()))
def test_every_bad_token_is_401_never_anonymous(client: TestClient, reason: str) -> None:
    r = _search(client, {"query": "night"}, f"Bearer {_bad_tokens()[reason]}")
    assert r.status_code == 401, (reason, r.text)
    body = r.json()
    assert body["error"] == "unauthorized" and body["message"] and body["request_id"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc"])
def test_malformed_authorization_headers_are_401(client: TestClient, header: str) -> None:
    assert _search(client, {"query": "night"}, header).status_code == 401


def test_valid_token_personalizes_and_variant_selects_the_weight(client: TestClient) -> None:
    token = f"Bearer {issue_token(FAN, SECRET)}"
    anon = _search(client, {"query": "night", "page_size": 30}).json()
    mine = _search(client, {"query": "night", "page_size": 30, "experiment_variant": "p60"}, token).json()
    assert mine["personalized"] is True and mine["personalization_weight"] == 0.6
    assert [h["content"]["id"] for h in mine["results"]] != [h["content"]["id"] for h in anon["results"]]
    assert all(0.0 <= h["personalization_score"] <= 1.0 for h in mine["results"])
    again = _search(client, {"query": "night", "page_size": 30}).json()
    assert [h["content"]["id"] for h in again["results"]] == [h["content"]["id"] for h in anon["results"]]


@pytest.mark.parametrize(
    "body",
    [
        {"query": "night", "page": 0},
        {"query": "night", "page": -1},
        {"query": "night", "page_size": 0},
        {"query": "night", "page_size": 101},
        {"query": "night", "page": "two"},
        {"query": ""},
        {"query": "x" * 513},
        {},
        {"query": "night", "limit": 5},
        {"query": "night", "filters": {"year_range": [2000, 1990]}},
        {"query": "night", "filters": {"year_range": [1990]}},
        {"query": "night", "filters": {"content_rating_limit": "XXX"}},
        {"query": "night", "filters": {"blocked_genres": "Horror"}},
        {"query": "night", "experiment_variant": "nope"},
    ],
)
def test_bad_bodies_are_422_json(client: TestClient, body: dict[str, object]) -> None:
    r = _search(client, body)
    assert r.status_code == 422, (body, r.text)
    payload = r.json()
    assert payload["error"] == "validation_error" and payload["message"] and payload["request_id"]


def test_page_past_the_end_is_empty_with_total(client: TestClient) -> None:
    first = _search(client, {"query": "night", "page_size": 100}).json()
    total = first["total_count"]
    past = _search(client, {"query": "night", "page": total // 100 + 2, "page_size": 100}).json()
    assert past["results"] == [] and past["total_count"] == total


def test_blocked_genres_over_http(client: TestClient) -> None:
    body = {"query": "dark night", "page_size": 100, "filters": {"blocked_genres": ["Horror", "Comedy"]}}
    r = _search(client, body, f"Bearer {issue_token(FAN, SECRET)}")
    assert r.status_code == 200
    for hit in r.json()["results"]:
        assert not {"Horror", "Comedy"} & set(hit["content"]["genres"])


@pytest.mark.parametrize("query", ["'; DROP TABLE content; --", '" OR 1=1', "1; DELETE FROM users"])
def test_injection_looking_queries_are_plain_text(client: TestClient, query: str) -> None:
    r = _search(client, {"query": query})
    assert r.status_code == 200 and isinstance(r.json()["results"], list)
    assert _search(client, {"query": "night"}).json()["total_count"] > 0


def test_unconfigured_app_is_503_json() -> None:
    r = TestClient(create_app(), raise_server_exceptions=False).post("/api/v1/search", json={"query": "a"})
    assert r.status_code == 503 and r.json()["error"] == "not_ready"


def test_refresh_needs_a_service_token(client: TestClient) -> None:
    assert client.post("/api/v1/search/refresh").status_code == 401
    user = client.post(
        "/api/v1/search/refresh", headers={"Authorization": f"Bearer {issue_token(FAN, SECRET)}"}
    )
    assert user.status_code == 403
