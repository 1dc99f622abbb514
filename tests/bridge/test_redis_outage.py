"""Redis going away gives a clear 503, and the same process serves again once it is back.

The test runs its own ``redis-server`` (a real one) on a free loopback port so
it can stop and restart it without touching the shared development Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from playback_bridge import InProcessEventBus, SyncNotifier
from tests.bridge.conftest import missing, running_app, token

pytestmark = pytest.mark.redis


class RedisProcess:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path, redis_url: str) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        missing("redis-server binary not found")
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_down_gives_503_and_recovers(own_redis: RedisProcess) -> None:
    client = aioredis.from_url(
        f"redis://127.0.0.1:{own_redis.port}/0", socket_connect_timeout=0.5, socket_timeout=1
    )
    body = {"user_id": "u1", "content_id": "c1", "device_id": "tv", "duration_seconds": 100.0}
    h = token("u1")

    async def handler(batch: object) -> None:
        return None

    async with running_app(client, InProcessEventBus(handler), SyncNotifier(None), "playback") as (_, api):
        assert (await api.post("/api/v1/sessions", json=body, headers=h)).status_code == 201
        own_redis.stop()
        # Answered within the client's socket timeouts, not left hanging.
        r = await api.post("/api/v1/sessions", json=body, headers=h)
        assert r.status_code == 503
        assert r.json()["error"] == "session_store_unavailable"
        assert "Redis" in r.json()["message"] and r.json()["request_id"]
        assert (await api.get("/api/v1/sessions/abc", headers=h)).status_code == 503

        own_redis.start()
        r = await api.post("/api/v1/sessions", json=body, headers=h)
        assert r.status_code == 201, r.text
        assert (await api.get(f"/api/v1/sessions/{r.json()['id']}", headers=h)).status_code == 200
    await client.aclose()
