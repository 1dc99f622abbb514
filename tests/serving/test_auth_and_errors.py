"""Auth and the error contract, through the ASGI app before any engine is attached.

Authentication runs before the app touches its state, so every 401 case is
visible on an app that has no engine yet (which is also how a starting
service behaves). Cross-user 403 and the service scope are in test_api.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
import pytest
from starlette.testclient import TestClient

from serving._api import create_app
from serving._auth import TokenPolicy, issue_token

SECRET = "test-secret-0123456789abcdef0123"
ENDPOINTS = [
    ("post", "/api/v1/recommendations", {"user_id": "u1"}),
    ("post", "/api/v1/personalization/score", {"user_id": "u1", "content_id": "1"}),
    ("post", "/api/v1/profile/update", {"user_id": "u1", "viewing_events": []}),
    ("post", "/api/v1/lora/train", {"user_id": "u1"}),
    ("get", "/api/v1/lora/jobs/some-job", None),
]


@pytest.fixture
def client() -> TestClient:
    app = create_app()
    app.state.jwt_secret = SECRET
    return TestClient(app, raise_server_exceptions=False)


def _claims(now: int, **extra: object) -> dict[str, object]:
    return {"sub": "u1", "iat": now, "exp": now + 600, **extra}


def _hs256(claims: dict[str, object]) -> str:
    return "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")


#: attack name -> (the Authorization header built from the current time, the 401 reason).
#: Built when a test runs, never at import: a token minted at collection time ages while
#: the rest of the suite runs (``issued_in_the_future`` became valid after 270 s).
ATTACKS: dict[str, tuple[Callable[[int], str | None], str]] = {
    "missing_header": (lambda now: None, "missing"),
    "not_bearer": (lambda now: "Basic dTE6cHc=", "malformed"),
    "empty_bearer": (lambda now: "Bearer ", "malformed"),
    "malformed": (lambda now: "Bearer not.a.jwt", "malformed"),
    "expired": (lambda now: "Bearer " + issue_token("u1", SECRET, ttl_seconds=-120), "expired"),
    "bad_signature": (
        lambda now: "Bearer " + issue_token("u1", "another-secret-0123456789abcdef"),
        "bad_signature",
    ),
    "alg_none": (lambda now: "Bearer " + jwt.encode(_claims(now), None, algorithm="none"), "bad_algorithm"),
    "alg_hs512": (
        lambda now: "Bearer " + jwt.encode(_claims(now), SECRET, algorithm="HS512"),
        "bad_algorithm",
    ),
    "missing_sub": (
        lambda now: _hs256({k: v for k, v in _claims(now).items() if k != "sub"}),
        "missing_sub",
    ),
    "empty_sub": (lambda now: _hs256(_claims(now, sub=" ")), "missing_sub"),
    "scope_number": (lambda now: _hs256(_claims(now, scope=5)), "malformed"),
    "scope_dict": (lambda now: _hs256(_claims(now, scope={"sona:service": True})), "malformed"),
    "scope_list_of_numbers": (lambda now: _hs256(_claims(now, scope=[1, 2])), "malformed"),
    "issued_in_the_future": (lambda now: _hs256(_claims(now, iat=now + 300)), "not_yet_valid"),
    "missing_exp": (lambda now: _hs256({"sub": "u1", "iat": now}), "missing_claim"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[p for _, p, _ in ENDPOINTS])
def test_every_protected_endpoint_rejects_every_attack_token_with_401(
    client: TestClient, attack: str, method: str, path: str, body: dict[str, object] | None
) -> None:
    build, reason = ATTACKS[attack]
    header = build(int(time.time()))
    headers = {"Authorization": header} if header is not None else {}
    response = client.request(method, path, json=body, headers=headers)
    assert response.status_code == 401, response.text
    payload = response.json()
    assert payload["error"] == "unauthorized"
    assert payload["reason"] == reason
    assert payload["message"]
    assert payload["request_id"] == response.headers["x-request-id"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_health_needs_no_token_and_ready_is_503_without_engine(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["error"] == "not_ready"
    assert ready.json()["checks"]["model"] == "not loaded"


def test_valid_token_on_a_starting_service_is_503_not_500(client: TestClient) -> None:
    token = issue_token("u1", SECRET)
    response = client.post(
        "/api/v1/recommendations", json={"user_id": "u1"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 503
    assert response.json()["error"] == "not_ready"


@pytest.mark.parametrize("scope", ["sona:service", ["sona:service"], "", []])
def test_string_and_list_scopes_are_accepted(client: TestClient, scope: object) -> None:
    token = jwt.encode(_claims(int(time.time()), scope=scope), SECRET, algorithm="HS256")
    r = client.post(
        "/api/v1/recommendations", json={"user_id": "u1"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 503, r.text  # authenticated; the service just has no engine yet


def test_a_few_seconds_of_clock_skew_are_tolerated(client: TestClient) -> None:
    now = int(time.time())
    ahead = jwt.encode({"sub": "u1", "iat": now + 5, "exp": now + 600}, SECRET, algorithm="HS256")
    just_expired = jwt.encode({"sub": "u1", "iat": now - 600, "exp": now - 5}, SECRET, algorithm="HS256")
    for token in (ahead, just_expired):
        r = client.post(
            "/api/v1/recommendations", json={"user_id": "u1"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 503, r.text


def test_an_unexpected_exception_is_a_generic_json_500_with_the_request_id(client: TestClient) -> None:
    @client.app.get("/api/v1/explode")  # type: ignore[attr-defined]
    def explode() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    r = client.get("/api/v1/explode", headers={"X-Request-ID": "trace-500"})
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal_error"
    assert body["request_id"] == "trace-500" == r.headers["x-request-id"]
    assert set(body) == {"error", "message", "request_id"}
    assert "hunter2" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text


def test_unknown_route_is_json_404_and_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/api/v1/nope", headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "Not Found", "request_id": "trace-42"}
    assert response.headers["x-request-id"] == "trace-42"


def test_unsafe_request_id_is_replaced(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 32


def test_metrics_count_requests_and_jwt_failures(client: TestClient) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("sona_jwt_failures_total", {"reason": "expired"})
    before_req = value("sona_http_requests_total", {"endpoint": "/api/v1/recommendations", "status": "401"})
    client.post(
        "/api/v1/recommendations",
        json={"user_id": "u1"},
        headers={"Authorization": "Bearer " + issue_token("u1", SECRET, ttl_seconds=-120)},
    )
    assert value("sona_jwt_failures_total", {"reason": "expired"}) == before + 1
    after_req = value("sona_http_requests_total", {"endpoint": "/api/v1/recommendations", "status": "401"})
    assert after_req == before_req + 1


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"aud": "other-service", "iss": "gateway"}, "bad_audience"),
        ({"aud": "sona", "iss": "someone-else"}, "bad_issuer"),
        ({"iss": "gateway"}, "missing_claim"),
        ({"aud": "sona", "iss": "gateway", "exp_in": 3 * 3600}, "lifetime_too_long"),
    ],
)
def test_audience_issuer_and_lifetime_are_checked_when_configured(
    client: TestClient, extra: dict[str, object], reason: str
) -> None:
    client.app.state.jwt_policy = TokenPolicy(max_lifetime_seconds=3600, audience="sona", issuer="gateway")  # type: ignore[attr-defined]
    now = int(time.time())
    claims = {"sub": "u1", "iat": now, "exp": now + int(extra.pop("exp_in", 600)), **extra}  # type: ignore[call-overload]
    r = client.post(
        "/api/v1/recommendations", json={"user_id": "u1"}, headers={"Authorization": _hs256(claims)}
    )
    assert r.status_code == 401, r.text
    assert r.json()["reason"] == reason
    good = _hs256({"sub": "u1", "iat": now, "exp": now + 600, "aud": "sona", "iss": "gateway"})
    ok = client.post("/api/v1/recommendations", json={"user_id": "u1"}, headers={"Authorization": good})
    assert ok.status_code == 503, ok.text  # authenticated; the app has no engine yet
