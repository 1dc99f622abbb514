"""One error contract for every sona HTTP service.

Every error leaves as JSON ``{error, message, request_id}`` (plus a few typed
extras such as ``field``/``index``, ``current_count``/``required`` or
``retry_after_seconds``), never as a stack trace. :data:`ERROR_STATUS` is the
single table from exception class to HTTP status; endpoints raise ``sona``
errors and never build error responses themselves.

Usage::

    app = FastAPI()
    app.state.jwt_secret = resolve_jwt_secret(settings)
    install_error_handlers(app)

    @app.post("/x")
    def x(body: Body, principal: Authenticated) -> Out: ...
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving._auth import AuthError, ForbiddenError, Principal, decode_token, parse_bearer
from serving._jobs import TrainingInProgressError
from serving._metrics import JWT_FAILURES, REQUESTS
from sona import (
    ConfigError,
    DataError,
    FitError,
    InsufficientDataError,
    NotFittedError,
    NotFoundError,
    SonaError,
    StorageError,
    TrainedTooRecentlyError,
    TrainingRejectedError,
    UnknownContentError,
    UnknownJobError,
    UnknownUserError,
    ValidationError,
)

__all__ = [
    "ERROR_STATUS",
    "REQUEST_ID_HEADER",
    "Authenticated",
    "RequestContextMiddleware",
    "bearer_principal",
    "error_response",
    "install_error_handlers",
    "request_id",
]

logger = logging.getLogger("serving")

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: Exception class → (HTTP status, ``error`` code, whether the message is safe to show).
#: Ordered most specific first; the first ``isinstance`` match wins.
ERROR_STATUS: tuple[tuple[type[BaseException], int, str, bool], ...] = (
    (AuthError, 401, "unauthorized", True),
    (ForbiddenError, 403, "forbidden", True),
    (UnknownContentError, 404, "unknown_content", True),
    (UnknownJobError, 404, "unknown_job", True),
    (UnknownUserError, 404, "unknown_user", True),
    (NotFoundError, 404, "not_found", True),
    (InsufficientDataError, 422, "insufficient_data", True),
    (TrainedTooRecentlyError, 409, "trained_too_recently", True),
    (TrainingInProgressError, 409, "training_in_progress", True),
    (TrainingRejectedError, 409, "training_rejected", True),
    (ValidationError, 422, "validation_error", True),
    (DataError, 422, "invalid_data", True),
    (NotFittedError, 503, "not_ready", False),
    (StorageError, 503, "storage_unavailable", False),
    (ConfigError, 500, "internal_error", False),
    (FitError, 500, "internal_error", False),
    (SonaError, 500, "internal_error", False),
)

_GENERIC_MESSAGE = {
    500: "internal server error",
    503: "service is not ready; retry later",
}


def request_id(request: Request) -> str:
    """The id :class:`RequestContextMiddleware` gave this request (or a fresh one)."""
    rid = request.scope.setdefault("state", {}).get("request_id")
    if rid is None:
        rid = uuid.uuid4().hex
        request.scope["state"]["request_id"] = rid
    return str(rid)


def _body(error: str, message: str, rid: str, **extra: object) -> dict[str, object]:
    return {"error": error, "message": message, "request_id": rid, **extra}


def _extras(exc: BaseException) -> tuple[dict[str, object], dict[str, str]]:
    """Typed context of an exception as JSON fields, and headers it implies."""
    if isinstance(exc, AuthError):
        challenge = f'Bearer error="invalid_token", reason="{exc.reason}"'
        return {"reason": exc.reason}, {"WWW-Authenticate": challenge}
    if isinstance(exc, InsufficientDataError):
        return {"user_id": exc.user_id, "current_count": exc.current_count, "required": exc.required}, {}
    if isinstance(exc, TrainedTooRecentlyError):
        seconds = max(0.0, float(exc.retry_after_seconds))
        return (
            {"user_id": exc.user_id, "retry_after_seconds": round(seconds, 3)},
            {"Retry-After": str(math.ceil(seconds))},
        )
    if isinstance(exc, TrainingInProgressError):
        return {"user_id": exc.user_id, "job_id": exc.job_id}, {}
    if isinstance(exc, ValidationError):
        return {"field": exc.field, "index": exc.index}, {}
    if isinstance(exc, UnknownContentError):
        return {"content_ids": exc.content_ids}, {}
    if isinstance(exc, UnknownJobError):
        return {"job_id": exc.job_id}, {}
    if isinstance(exc, UnknownUserError):
        return {"user_id": exc.user_id}, {}
    return {}, {}


def error_response(request: Request, exc: BaseException) -> JSONResponse:
    """The JSON response for ``exc`` according to :data:`ERROR_STATUS`."""
    rid = request_id(request)
    status, code, safe = next(
        ((s, c, ok) for cls, s, c, ok in ERROR_STATUS if isinstance(exc, cls)), (500, "internal_error", False)
    )
    if safe:
        message = getattr(exc, "message", None) or str(exc)
        extra, headers = _extras(exc)
    else:
        logger.error("request %s failed with %s", rid, type(exc).__name__, exc_info=exc)
        message, extra, headers = _GENERIC_MESSAGE.get(status, _GENERIC_MESSAGE[500]), {}, {}
    headers[REQUEST_ID_HEADER] = rid
    return JSONResponse(_body(code, message, rid, **extra), status_code=status, headers=headers)


def _field_path(loc: Sequence[int | str]) -> tuple[str, int | None]:
    """``("body", "viewing_events", 3, "rating")`` → ``("viewing_events[3].rating", 3)``."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    path, index = "", None
    for p in parts:
        if isinstance(p, int):
            path += f"[{p}]"
            index = p if index is None else index
        else:
            path += f".{p}" if path else str(p)
    return path or (str(loc[0]) if loc else "body"), index


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    rid = request_id(request)
    errors = []
    for err in exc.errors()[:10]:
        field, index = _field_path(err.get("loc", ()))
        errors.append({"field": field, "index": index, "message": str(err.get("msg", "invalid"))})
    first = errors[0] if errors else {"field": "body", "index": None, "message": "invalid request"}
    body = _body(
        "validation_error",
        f"{first['field']}: {first['message']}",
        rid,
        field=first["field"],
        index=first["index"],
        errors=errors,
    )
    return JSONResponse(body, status_code=422, headers={REQUEST_ID_HEADER: rid})


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


def _http_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    rid = request_id(request)
    headers = dict(exc.headers or {})
    headers[REQUEST_ID_HEADER] = rid
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(_body(code, str(exc.detail), rid), status_code=exc.status_code, headers=headers)


async def _sona_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, exc)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _validation_response(request, exc)


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _http_response(request, exc)


class RequestContextMiddleware:
    """Pure-ASGI middleware: request ids, per-route status counters, and the catch-all 500.

    An incoming ``X-Request-ID`` is kept when it is short and plain, otherwise a
    new one is made; either way it is echoed back. An exception no handler
    claimed becomes a generic 500 JSON body; the traceback goes to the log only.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise
            logger.exception("request %s: unhandled %s", rid, type(exc).__name__)
            response = JSONResponse(_body("internal_error", _GENERIC_MESSAGE[500], rid), status_code=500)
            await response(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(endpoint=endpoint, status=str(status)).inc()


def install_error_handlers(app: FastAPI) -> None:
    """Route every error of ``app`` through :data:`ERROR_STATUS` and add request ids."""
    for cls in (SonaError, AuthError, ForbiddenError):
        app.add_exception_handler(cls, _sona_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_middleware(RequestContextMiddleware)


def bearer_principal(request: Request) -> Principal:
    """FastAPI dependency: the verified caller, from ``Authorization: Bearer``.

    The HS256 secret is ``app.state.jwt_secret`` (set it from
    :func:`serving._auth.resolve_jwt_secret`). Failures raise
    :class:`~serving._auth.AuthError` (401 with a reason) and are counted.
    """
    secret = getattr(request.app.state, "jwt_secret", None)
    if not secret:
        raise ConfigError("app.state.jwt_secret is not configured")
    try:
        policy = getattr(request.app.state, "jwt_policy", None)  # set by serving._limits.EdgeGuard.apply
        return decode_token(parse_bearer(request.headers.get("authorization")), secret, policy)
    except AuthError as exc:
        JWT_FAILURES.labels(reason=exc.reason).inc()
        raise


Authenticated = Annotated[Principal, Depends(bearer_principal)]
