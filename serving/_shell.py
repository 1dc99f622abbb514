"""An empty FastAPI "shell" for services whose real app is built in ``__init__``.

BentoML mounts an ASGI app at import time, but the playback and gateway apps
need settings, Redis and the engine, which exist only once the service class is
constructed. The shell is mounted instead; ``__init__`` stores the real app in
``shell.state.inner`` and the shell runs the inner app's lifespan.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["NewlinePaths", "make_shell"]


@contextlib.asynccontextmanager
async def _inner_lifespan(shell: FastAPI) -> AsyncIterator[None]:
    inner: FastAPI | None = getattr(shell.state, "inner", None)
    if inner is None:
        yield
        return
    async with inner.router.lifespan_context(inner):
        yield


class _Shell(FastAPI):
    def mount(self, path: str, app: ASGIApp, name: str | None = None) -> None:
        """Mount as usual, but let the mount match any path, newlines (``%0A``) included.

        Starlette's ``.*`` stops at a newline; BentoML then answers such a path itself with
        a plain-text 404. Matched here, the inner app answers with its JSON errors.
        """
        super().mount(path, app, name)
        route = self.router.routes[-1]
        if isinstance(route, Mount):
            route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)


def make_shell() -> FastAPI:
    """A shell app without docs routes of its own (they would shadow the inner app's)."""
    return _Shell(lifespan=_inner_lifespan, docs_url=None, redoc_url=None, openapi_url=None)


class NewlinePaths:
    """BentoML middleware: a path with a newline (``%0A``) goes straight to the mounted app.

    BentoML routes to the app it mounts with a Starlette ``Mount``, whose ``.*`` stops at a
    newline, and answers such a path itself with a plain-text 404. The mounted app answers
    it like any other path: JSON errors (401, 404, 405, 422), never plain text. Register it
    with ``Service.add_asgi_middleware(NewlinePaths, mounted=app)``.
    """

    def __init__(self, app: ASGIApp, *, mounted: ASGIApp) -> None:
        self.app = app
        self.mounted = mounted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\n" in scope["path"]:
            await self.mounted(scope, receive, send)
        else:
            await self.app(scope, receive, send)
