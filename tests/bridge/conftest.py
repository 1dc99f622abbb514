"""Fixtures of the playback-bridge tests: isolated Redis namespaces, Kafka prefixes, a loopback sync server.

The only stand-in is the remote sync service, played by a real HTTP server on
127.0.0.1 (``sync_server``) or by a socket that accepts and never answers
(``blackhole_sync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from playback_bridge import EventProducer, SyncNotifier
from serving._auth import SERVICE_SCOPE, issue_token
from serving.playback import create_app
from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic

SECRET = "test-secret-for-playback-0123456789"
#: Consumer-group timings for a single-broker test cluster: joins take seconds at the defaults.
FAST_GROUP = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300, "poll_timeout_ms": 100}


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for ``predicate`` without blocking the loop; fail the test if it never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def missing(reason: str) -> NoReturn:
    """Skip for a missing tool, or fail under ``make test`` (``SONA_REQUIRE_SERVICES=1``) like ``_need``."""
    if os.environ.get("SONA_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}; it is required under make test")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real engine (synthetic catalog of 150 titles, 40 users, 2 epochs), fitted once and saved."""
    catalog, events = generate_synthetic(
        SyntheticConfig(n_items=150, n_users=40, events_per_user=25.0, seed=7)
    )
    directory = tmp_path_factory.mktemp("engine") / "model"
    Sona(catalog, SonaConfig(epochs=2, dim=16, hidden_dim=32, progress=False, seed=0)).fit(events).save(
        directory
    )
    return directory


def weak_genre_titles(engine: Sona, user: str) -> tuple[str, list[str]]:
    """The user's least-liked genre and two single-genre titles of it (watching them must raise it)."""
    affinity = engine.profile(user).genre_affinities
    for genre in sorted(affinity, key=affinity.__getitem__):
        titles = [item.content_id for item in engine.catalog if item.genres == (genre,)]
        if len(titles) >= 2:
            return genre, titles[:2]
    raise AssertionError("no genre with two single-genre titles")


@pytest.fixture
def engine(engine_dir: Path) -> Sona:
    """A private copy per test: the sink's ``observe`` calls change it."""
    return Sona.load(engine_dir)


@dataclass
class SyncServer:
    """A real HTTP server on loopback that records the JSON bodies it receives."""

    url: str
    received: list[dict[str, object]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def sync_server() -> Iterator[SyncServer]:
    state = SyncServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            length = int(self.headers.get("Content-Length", 0))
            state.paths.append(self.path)
            state.received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def blackhole_sync() -> Iterator[str]:
    """A sync 'service' that accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = sock.accept()
                held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_url: str, namespace: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def token(user_id: str, *, service: bool = False) -> dict[str, str]:
    scopes = (SERVICE_SCOPE,) if service else ()
    return {"Authorization": f"Bearer {issue_token(user_id, SECRET, scopes=scopes)}"}


@contextlib.asynccontextmanager
async def running_app(
    redis: aioredis.Redis, producer: EventProducer, notifier: SyncNotifier, namespace: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The playback app in-process (ASGI), with its lifespan running."""
    app = create_app(
        redis=redis, producer=producer, notifier=notifier, jwt_secret=SECRET, namespace=namespace
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://playback") as client:
            yield app, client
