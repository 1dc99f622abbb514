"""The OpenAPI document says what the server does: statuses, error body, enums, strict types, auth, docs.

In-process checks of the findings schemathesis made; ``test_contract.py`` runs
schemathesis itself against a real server.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.testclient import TestClient

from serving._state import ServiceState
from sona.features import DAYPARTS, DEVICE_TYPES, MOOD_GENRES
from sona.search import CONTENT_RATINGS, DEFAULT_VARIANTS
from tests.serving.test_playback_auth import BODY, playback  # noqa: F401 - the fixture

Auth = Callable[..., dict[str, str]]
ERROR_REF = "#/components/schemas/ErrorBody"


def _operations(schema: dict[str, object]) -> list[tuple[str, str, dict[str, object]]]:
    paths: dict[str, dict[str, dict[str, object]]] = schema["paths"]  # type: ignore[assignment]
    return [(m.upper(), p, op) for p, ops in paths.items() for m, op in ops.items()]


def test_every_operation_documents_its_errors_with_the_error_body(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    error = schema["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "message", "request_id"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's 422 body, never sent
    expected = {
        "/api/v1/recommendations": {"401", "403", "404", "413", "422", "429", "503"},
        "/api/v1/lora/train": {"401", "403", "404", "409", "413", "422", "429", "503"},
        "/api/v1/lora/jobs/{job_id}": {"401", "403", "404", "422", "429", "503"},
    }
    for method, path, op in _operations(schema):
        responses: dict[str, dict[str, object]] = op["responses"]  # type: ignore[assignment]
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                content = response["content"]["application/json"]  # type: ignore[index]
                assert content["schema"] == {"$ref": ERROR_REF}, (method, path, status)
        assert expected.get(path, set()) <= set(responses), (method, path, sorted(responses))


def test_a_bearer_scheme_guards_the_operations_that_read_a_token(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for method, path, op in _operations(schema):
        if path in ("/health", "/ready"):
            assert "security" not in op
        else:
            assert op["security"] == [{"bearerAuth": []}], (method, path)


def test_enums_are_the_servers_enums(client: TestClient) -> None:
    schemas = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    context = schemas["ViewingContext"]["properties"]

    def enum(prop: dict[str, object]) -> list[object]:
        return next(s["enum"] for s in prop["anyOf"] if "enum" in s)  # type: ignore[index,union-attr]

    assert enum(context["time_of_day"]) == list(DAYPARTS)
    assert enum(context["device_type"]) == list(DEVICE_TYPES)
    assert sorted(enum(context["mood"])) == sorted(MOOD_GENRES)  # type: ignore[type-var]


def test_search_enums_are_the_index_enums() -> None:
    from serving.discovery import SearchFiltersIn, SearchRequest

    request = SearchRequest.model_json_schema()["properties"]
    assert request["experiment_variant"]["enum"] == [name for name, _ in DEFAULT_VARIANTS]
    filters = SearchFiltersIn.model_json_schema()["properties"]
    assert filters["content_rating_limit"]["enum"] == list(CONTENT_RATINGS)


def test_every_enum_value_the_schema_offers_is_accepted(
    client: TestClient, auth: Auth, known_user: str
) -> None:
    for tod in DAYPARTS:
        for device in DEVICE_TYPES:
            body = {"user_id": known_user, "limit": 3, "context": {"time_of_day": tod, "device_type": device}}
            r = client.post("/api/v1/recommendations", json=body, headers=auth(known_user))
            assert r.status_code == 200, r.text
    for mood in MOOD_GENRES:
        body = {"user_id": known_user, "limit": 3, "context": {"mood": mood}}
        assert client.post("/api/v1/recommendations", json=body, headers=auth(known_user)).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/lora/train", {"force": 0}),
        ("/api/v1/lora/train", {"force": "true"}),
        ("/api/v1/recommendations", {"diversity_threshold": False}),
        ("/api/v1/recommendations", {"exclude_watched": 1}),
        ("/api/v1/recommendations", {"limit": True}),
        ("/api/v1/recommendations", {"limit": "5"}),
        ("/api/v1/recommendations", {"limit": 5.5}),
        ("/api/v1/personalization/score", {"content_id": None, "content_ids": ["c1"]}),
        ("/api/v1/personalization/score", {}),
    ],
)
def test_strict_types_refuse_what_the_schema_refuses(
    client: TestClient, state: ServiceState, auth: Auth, known_user: str, path: str, body: dict[str, object]
) -> None:
    r = client.post(path, json={"user_id": known_user, **body}, headers=auth(known_user))
    assert r.status_code == 422, r.text
    assert state.storage.list_jobs(known_user) == []  # "force": 0 once queued a real training


def test_is_rewatch_zero_is_422_and_stores_nothing(
    client: TestClient, state: ServiceState, auth: Auth
) -> None:
    content = str(state.engine.catalog.ids[0])
    event = {
        "content_id": content,
        "timestamp": "2026-03-01T20:00:00Z",
        "completion_rate": 0.9,
        "is_rewatch": 0,
    }
    r = client.post(
        "/api/v1/profile/update",
        json={"user_id": "strict", "viewing_events": [event]},
        headers=auth("strict"),
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "viewing_events[0].is_rewatch"
    assert state.storage.events_for_users(["strict"]).empty


def test_an_integral_float_is_an_integer_as_in_json_schema(
    client: TestClient, auth: Auth, known_user: str
) -> None:
    body = {"user_id": known_user, "limit": 4.0}
    r = client.post("/api/v1/recommendations", json=body, headers=auth(known_user))
    assert r.status_code == 200, r.text
    assert len(r.json()["recommendations"]) == 4


def test_a_timestamp_the_schema_allows_is_stored_and_one_it_refuses_is_422(
    client: TestClient, state: ServiceState, auth: Auth
) -> None:
    content = str(state.engine.catalog.ids[0])

    def post(stamp: object) -> httpx.Response:
        event = {"content_id": content, "timestamp": stamp, "completion_rate": 0.5}
        body = {"user_id": "clock", "viewing_events": [event]}
        return client.post("/api/v1/profile/update", json=body, headers=auth("clock"))  # type: ignore[return-value]

    for bad in (
        "0121-02-22T14:29:15Z",
        "2026-03-01 20:00:00Z",
        "2026-03-01T20:00:00",
        1772395200,
        "1772395200",
    ):
        r = post(bad)
        assert r.status_code == 422, (bad, r.text)
        assert "RFC 3339" in r.json()["message"]
    assert post("1678-01-01T00:00:00+23:59").status_code == 200
    assert post("2261-12-31t23:59:59.5-23:59").status_code == 200


async def test_405_names_every_method_of_the_path(
    playback: httpx.AsyncClient,  # noqa: F811 - the fixture
    auth: Auth,
) -> None:
    r = await playback.put("/api/v1/sessions/abc", headers=auth("u1"))
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "DELETE"}
    assert r.json()["error"] == "method_not_allowed"


def test_unknown_paths_are_json_404(client: TestClient) -> None:
    for path in ("/nope", "/api/v1/lora/jobs/", "/api/v1/recommendations/x"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/json"
        assert set(r.json()) >= {"error", "message", "request_id"}


def test_swagger_ui_is_served_from_the_service_itself(client: TestClient) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    for asset in ("/api/v1/docs/static/swagger-ui-bundle.js", "/api/v1/docs/static/swagger-ui.css"):
        assert asset in page.text
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 10_000, asset
