"""The OpenAPI document as the contract, and Swagger UI that renders with no internet.

FastAPI documents the success response and its own 422 body. :func:`document`
makes the document say everything else the server does:

* every error status an operation can return, each with the one error body
  (:class:`~serving._schemas.ErrorBody`): 401 where a bearer token is read, 422
  where anything is parsed, 400/413/431/429 from the edge limits, 503 wherever a
  dependency can fail, plus what a route declares itself (403, 404, 409) with
  :func:`errors`;
* a ``bearerAuth`` HTTP security scheme on the operations that read a token
  (optional on search), so Swagger's "Authorize" button works;
* Swagger UI's JavaScript and CSS from the ``fastapi-offline`` package, served by
  the service itself, instead of a CDN.

Usage::

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url="/api/v1/openapi.json")
    document(app, docs_url="/api/v1/docs")

    @app.post("/x", responses=errors(403, 404))
    def x(body: Body, principal: Authenticated) -> Out: ...
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

from serving._auth import Principal
from serving._schemas import ErrorBody

__all__ = ["BEARER", "document", "errors"]

#: Name of the security scheme in ``components.securitySchemes``.
BEARER = "bearerAuth"

_WHY: dict[int, str] = {
    400: "The request cannot be read (a body that is not UTF-8, a bad Content-Length).",
    401: "No valid bearer token; ``reason`` says why (missing, expired, bad_signature, ...).",
    403: "The token may not act for this user (only ``sona:service`` tokens act for anyone).",
    404: "A user, title, job or session named in the request does not exist.",
    409: "The request conflicts with current state (training queued, trained too recently).",
    413: "The request body is larger than the service accepts (``SONA_MAX_BODY_BYTES``).",
    422: "Invalid request: ``field`` names the first bad field, ``errors`` lists up to ten.",
    429: "Too many requests for this token; retry after ``Retry-After`` seconds.",
    431: "The request headers are larger than the service accepts.",
    503: "Not ready yet, or a dependency (database, Redis, model) is down; retry later.",
}
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
#: Probes the rate limit exempts (``serving._limits``).
_NOT_RATE_LIMITED = frozenset({"/health", "/ready"})


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses, each with the error body."""
    return {s: {"model": ErrorBody, "description": _WHY.get(s, "Error.")} for s in statuses}


def _auth_kind(dependant: Dependant) -> str | None:
    """``"required"`` or ``"optional"`` when a dependency yields a :class:`Principal`, else None."""
    kinds = set()
    for dep in _walk(dependant):
        if dep.call is None:
            continue
        try:
            returned = typing.get_type_hints(dep.call).get("return")
        except Exception:  # noqa: BLE001 - a dependency we cannot introspect does not authenticate
            continue
        if returned is Principal:
            kinds.add("required")
        elif returned is not None and Principal in typing.get_args(returned):
            kinds.add("optional")
    return "required" if "required" in kinds else ("optional" if kinds else None)


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    for dep in dependant.dependencies:
        yield dep
        yield from _walk(dep)


def _response(status: int) -> dict[str, Any]:
    return {"description": _WHY[status], "content": {"application/json": {"schema": _ERROR_REF}}}


def _contract(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        servers=app.servers,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, which we never send
        schemas.pop(name, None)
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "HS256 JWT: `sub` is the user id; the `sona:service` scope may act for any user.",
    }
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        auth = _auth_kind(route.dependant)
        for method in route.methods or ():
            op = schema["paths"].get(route.path_format, {}).get(method.lower())
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            dependant = route.dependant
            statuses: list[int] = []
            if auth is not None:
                op["security"] = [{BEARER: []}] if auth == "required" else [{}, {BEARER: []}]
                statuses.append(401)
            if dependant.body_params or dependant.query_params or dependant.path_params:
                statuses.append(422)
            statuses += [400, 413, 431]  # the edge limits (serving._limits) measure every request
            if route.path not in _NOT_RATE_LIMITED:
                statuses.append(429)
            if route.path != "/health":  # liveness answers without any dependency
                statuses.append(503)
            for status in statuses:
                responses[str(status)] = _response(status)
    return schema


def document(app: FastAPI, *, docs_url: str | None) -> FastAPI:
    """Make ``app.openapi()`` the full contract and serve Swagger UI at ``docs_url`` offline."""
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if "schema" not in cached:
            cached["schema"] = _contract(app)
        return cached["schema"]

    app.openapi = openapi  # type: ignore[method-assign]
    if docs_url is None or app.openapi_url is None:
        return app
    static = f"{docs_url}/static"
    app.mount(static, StaticFiles(directory=str(resources.files("fastapi_offline") / "static")), name="docs")
    openapi_url = app.openapi_url

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{static}/swagger-ui.css",
            swagger_favicon_url=f"{root}{static}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    # A plain route, not an APIRoute: ``gateway.compose`` copies only the API routes of its parts.
    app.add_route(docs_url, swagger_ui, methods=["GET"], include_in_schema=False)
    return app

