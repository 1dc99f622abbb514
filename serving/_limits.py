"""Limits at the edge: body size, header size and request rate, before parsing and before auth.

:class:`EdgeLimits` is pure ASGI middleware mounted outermost on every service's
app, so a request is measured before FastAPI reads its body, validates it or
verifies its token:

* **body**: a ``Content-Length`` above ``max_body_bytes`` is answered 413 at
  once, without reading the body; a body without one (chunked) is counted while
  the app streams it and stopped with 413 at the limit. Nothing ever holds more
  than ``max_body_bytes`` of a request.
* **headers**: more than ``max_header_bytes`` of request headers is 431.
* **rate**: at most ``rate_limit`` requests per ``rate_window_seconds`` per
  caller, 429 with ``Retry-After`` beyond. The caller is the verified token's
  user, or for anonymous and invalid tokens the client address; tokens with the
  ``sona:service`` scope (trusted backends acting for many users) are not
  limited. With ``REDIS_URL`` configured the counts live in Redis (a fixed
  window: ``INCR`` + ``EXPIRE``), so the limit holds across every replica; only
  the embedded default counts in process memory.

:func:`guard` mounts the middleware when the service module builds its app
(Starlette takes no middleware once it has started); the guard lets everything
through until :meth:`EdgeGuard.apply` gives it the settings and the JWT secret
in the service's ``__init__``, which also sets the token policy
(:class:`~serving._auth.TokenPolicy`) the app's authentication checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving._auth import AuthError, TokenPolicy, decode_token
from sona_app.settings import Settings

__all__ = [
    "EdgeGuard",
    "EdgeLimits",
    "LimitsConfig",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "guard",
]

logger = logging.getLogger("serving.limits")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Paths that must answer even to a flooding client: probes and scrapes.
_EXEMPT = ("/health", "/ready", "/readyz", "/livez", "/metrics")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The edge limits; ``rate_limit=0`` turns rate limiting off."""

    max_body_bytes: int = 1_000_000
    max_header_bytes: int = 16_384
    rate_limit: int = 6_000
    rate_window_seconds: int = 60

    @classmethod
    def from_settings(cls, settings: Settings) -> LimitsConfig:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_header_bytes=settings.max_header_bytes,
            rate_limit=settings.rate_limit,
            rate_window_seconds=settings.rate_window_seconds,
        )


class RateLimiter:
    """Counts requests per key in fixed windows; ``hit`` returns seconds to wait, or 0 if allowed."""

    def __init__(self, limit: int, window_seconds: int) -> None:
        self.limit = limit
        self.window_seconds = window_seconds

    async def hit(self, key: str) -> float:
        raise NotImplementedError

    def _window(self) -> tuple[int, float]:
        now = time.time()
        start = int(now // self.window_seconds) * self.window_seconds
        return start, start + self.window_seconds - now

    async def aclose(self) -> None:
        return None


class LocalRateLimiter(RateLimiter):
    """In-process counts: only right for one process (the embedded default without Redis)."""

    def __init__(self, limit: int, window_seconds: int, *, max_keys: int = 100_000) -> None:
        super().__init__(limit, window_seconds)
        self.max_keys = max_keys
        self._start = -1
        self._counts: dict[str, int] = {}

    async def hit(self, key: str) -> float:
        start, remaining = self._window()
        if start != self._start:  # a new window: every count starts again, memory is released
            self._start, self._counts = start, {}
        count = self._counts.get(key, 0) + 1
        if count > self.limit:
            return remaining
        if key in self._counts or len(self._counts) < self.max_keys:
            self._counts[key] = count
        return 0.0


class RedisRateLimiter(RateLimiter):
    """Counts shared by every replica: ``INCR`` of a key per caller and window, expiring with it.

    A Redis outage lets requests through (logged at most once a minute): the
    limit protects the service, and must not take it down with the cache.
    """

    def __init__(
        self, redis: aioredis.Redis, limit: int, window_seconds: int, *, prefix: str = "sona:rate"
    ) -> None:
        super().__init__(limit, window_seconds)
        self.redis = redis
        self.prefix = prefix
        self._logged = 0.0

    async def hit(self, key: str) -> float:
        start, remaining = self._window()
        name = f"{self.prefix}:{start}:{key}"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(name)
                pipe.expire(name, self.window_seconds + 1)
                count, _ = await pipe.execute()
        except Exception:  # noqa: BLE001 - fail open, see the class docstring
            if time.monotonic() - self._logged > 60:
                self._logged = time.monotonic()
                logger.warning("rate limiter: Redis unavailable; not limiting", exc_info=True)
            return 0.0
        return remaining if int(count) > self.limit else 0.0

    async def aclose(self) -> None:
        await self.redis.aclose()


class EdgeGuard:
    """What :class:`EdgeLimits` enforces; unconfigured, it lets everything through."""

    def __init__(self) -> None:
        self.config: LimitsConfig | None = None
        self.limiter: RateLimiter | None = None
        self.jwt_secret: str | None = None
        self.policy: TokenPolicy | None = None

    def configure(
        self, config: LimitsConfig, *, jwt_secret: str | None = None, limiter: RateLimiter | None = None
    ) -> EdgeGuard:
        self.config = config
        self.jwt_secret = jwt_secret
        self.limiter = limiter
        return self

    def apply(self, settings: Settings, jwt_secret: str | None, *apps: Starlette) -> EdgeGuard:
        """Enforce the settings' limits, and their token policy on ``apps`` (the apps that authenticate).

        Rate counts go to Redis when ``REDIS_URL`` was configured, else stay in process.
        """
        config = LimitsConfig.from_settings(settings)
        limiter: RateLimiter | None = None
        if config.rate_limit > 0:
            if settings.rate_limit_shared:
                client = aioredis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
                limiter = RedisRateLimiter(client, config.rate_limit, config.rate_window_seconds)
            else:
                limiter = LocalRateLimiter(config.rate_limit, config.rate_window_seconds)
        policy = TokenPolicy.from_settings(settings)
        for app in apps:
            app.state.jwt_policy = policy
        self.policy = policy
        return self.configure(config, jwt_secret=jwt_secret, limiter=limiter)

    def caller(self, scope: Scope, authorization: str | None) -> str | None:
        """The rate-limit key of a request, or None for callers that are not limited."""
        if authorization and self.jwt_secret:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                try:
                    principal = decode_token(token.strip(), self.jwt_secret, self.policy)
                except AuthError:
                    pass  # the app answers 401; limit it by address like an anonymous caller
                else:
                    if principal.is_service:
                        return None
                    return "user:" + hashlib.sha256(principal.user_id.encode()).hexdigest()[:32]
        client = scope.get("client")
        return f"addr:{client[0] if client else 'unknown'}"


class _BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; the app's handler answers 413."""


class EdgeLimits:
    """Pure-ASGI middleware applying an :class:`EdgeGuard` (see the module docstring)."""

    def __init__(self, app: ASGIApp, guard: EdgeGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.guard.config
        if scope["type"] != "http" or config is None:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if size > config.max_header_bytes:
            await _reject(
                scope,
                send,
                431,
                "headers_too_large",
                f"request headers exceed {config.max_header_bytes} bytes",
            )
            return
        length: int | None = None
        authorization: str | None = None
        for name, value in headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _reject(scope, send, 400, "bad_request", "Content-Length is not a number")
                    return
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        if length is not None and length > config.max_body_bytes:
            await _reject(scope, send, 413, "payload_too_large", _too_large(config))
            return
        limiter = self.guard.limiter
        if limiter is not None and not scope.get("path", "").startswith(_EXEMPT):
            key = self.guard.caller(scope, authorization)
            wait = await limiter.hit(key) if key is not None else 0.0
            if wait > 0:
                retry = str(max(1, math.ceil(wait)))
                message = (
                    f"more than {limiter.limit} requests in {limiter.window_seconds} s; retry in {retry} s"
                )
                await _reject(scope, send, 429, "rate_limited", message, retry_after=retry)
                return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, _counting(receive, config), tracking)
        except _BodyTooLarge:  # the app let it through: answer it here unless it began a response
            if started:
                raise
            await _reject(scope, send, 413, "payload_too_large", _too_large(config))


def _too_large(config: LimitsConfig) -> str:
    return f"request body exceeds {config.max_body_bytes} bytes"


def _counting(receive: Receive, config: LimitsConfig) -> Receive:
    """``receive`` that stops a streamed body at ``max_body_bytes`` instead of reading it all."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > config.max_body_bytes:
                raise _BodyTooLarge(413, _too_large(config))
        return message

    return wrapped


async def _reject(
    scope: Scope, send: Send, status: int, error: str, message: str, *, retry_after: str | None = None
) -> None:
    """The error contract's JSON body, sent before the app (and its request-id middleware) runs."""
    incoming = ""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            break
    rid = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    body = json.dumps({"error": error, "message": message, "request_id": rid}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode("latin-1")),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
        headers.remove((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def guard(app: Starlette) -> EdgeGuard:
    """Mount :class:`EdgeLimits` outermost on ``app``; the returned guard passes all until applied."""
    edge = EdgeGuard()
    app.add_middleware(EdgeLimits, guard=edge)
    return edge
