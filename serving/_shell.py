"""An empty FastAPI "shell" for services whose real app is built in ``__init__``.

BentoML mounts an ASGI app at import time, but the playback and gateway apps
need settings, Redis and the engine, which exist only once the service class is
constructed. The shell is mounted instead; ``__init__`` stores the real app in
``shell.state.inner`` and the shell runs the inner app's lifespan.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

__all__ = ["make_shell"]


@contextlib.asynccontextmanager
async def _inner_lifespan(shell: FastAPI) -> AsyncIterator[None]:
    inner: FastAPI | None = getattr(shell.state, "inner", None)
    if inner is None:
        yield
        return
    async with inner.router.lifespan_context(inner):
        yield


def make_shell() -> FastAPI:
    """A shell app without docs routes of its own (they would shadow the inner app's)."""
    return FastAPI(lifespan=_inner_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
