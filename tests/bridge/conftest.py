"""Fixtures of the playback-bridge tests: isolated Redis namespaces, Kafka prefixes, a loopback sync server.

The only stand-in is the remote sync service, played by a real HTTP server on
127.0.0.1 (``sync_server``) or by a socket that accepts and never answers
(``blackhole_sync``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from playback_bridge import EventProducer, SyncNotifier
from serving._auth import SERVICE_SCOPE, issue_token
from serving.playback import create_app

SECRET = "test-secret-for-playback-0123456789"


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
