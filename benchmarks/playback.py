"""Latency of ``PATCH /api/v1/sessions/{id}/position`` with the sync service healthy vs black-holed.

Each sync condition runs two apps side by side, requests alternating between
them: *durable* (the app as shipped: the answer waits for the broker's
``acks="all"`` acknowledgement, or the in-process handler) and *unconfirmed*
(the same app with ``deliver`` only queueing the event, as before durability),
so the cost of the wait is a ratio measured under the same load.

Usage::

    source /tmp/svc.env   # REDIS_URL (required), KAFKA_BROKERS (optional)
    .venv/bin/python benchmarks/playback.py [--requests 3000]

The app runs **in-process over ASGI** (httpx ``ASGITransport``, no socket to
the app) against the real Redis, publishing to the real broker when
``KAFKA_BROKERS`` is set (else the in-process bus). The sync service is a real
HTTP server in a child process (healthy, answers 204) or a listening socket
that never accepts nor answers (black-holed). Requests are sequential; each
latency is one full request through FastAPI, JWT check, Redis read + pipelined
write, event publish and sync scheduling. Appends a table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence

import httpx
import numpy as np
import redis.asyncio as aioredis
from _report import append_section, loadavg, percentiles, section

from playback_bridge import (
    EventProducer,
    InProcessEventBus,
    KafkaEventProducer,
    SyncNotifier,
    Topics,
)
from serving._auth import issue_token
from serving.playback import create_app

SECRET = "benchmark-secret-0123456789abcdef"

_SYNC_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


async def _discard(batch: Sequence[object]) -> None:
    return None


class _Unconfirmed:
    """The shipped producer with ``deliver`` that only queues: the pre-durability baseline."""

    def __init__(self, inner: EventProducer) -> None:
        self.inner = inner

    async def start(self) -> None:
        await self.inner.start()

    def publish(self, event: object) -> None:
        self.inner.publish(event)  # type: ignore[arg-type]

    async def deliver(self, event: object, timeout: float | None = None) -> None:
        self.inner.publish(event)  # type: ignore[arg-type]

    async def flush(self, timeout: float = 10.0) -> None:
        await self.inner.flush(timeout)

    async def stop(self, timeout: float = 5.0) -> None:
        await self.inner.stop(timeout)


async def measure(
    sync_url: str, n: int, redis_url: str, brokers: list[str]
) -> dict[str, tuple[np.ndarray, SyncNotifier]]:
    """Two apps side by side, durable and unconfirmed; each request alternates between them."""
    redis = aioredis.from_url(redis_url)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {issue_token('bench-user', SECRET)}"}
    body = {"user_id": "bench-user", "content_id": "c1", "device_id": "tv", "duration_seconds": 600_000.0}
    out: dict[str, tuple[np.ndarray, SyncNotifier]] = {}
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[str, tuple[httpx.AsyncClient, str]] = {}
        for mode in ("durable", "unconfirmed"):
            producer: EventProducer = (
                KafkaEventProducer(brokers, Topics(f"bench{uuid.uuid4().hex[:8]}"), partitions=3)
                if brokers
                else InProcessEventBus(_discard)
            )
            if mode == "unconfirmed":
                producer = _Unconfirmed(producer)
            notifier = SyncNotifier(sync_url)
            app = create_app(
                redis=redis, producer=producer, notifier=notifier, jwt_secret=SECRET, namespace=namespace
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://playback")
            )
            sid = (await client.post("/api/v1/sessions", json=body, headers=headers)).json()["id"]
            urls[mode] = (client, f"/api/v1/sessions/{sid}/position")
            out[mode] = (np.empty(n), notifier)
        for i in range(200):  # warm-up
            for client, url in urls.values():
                await client.patch(url, json={"position_seconds": i}, headers=headers)
        for i in range(n):
            for mode, (client, url) in urls.items():
                t0 = time.perf_counter()
                r = await client.patch(url, json={"position_seconds": 200 + i}, headers=headers)
                out[mode][0][i] = (time.perf_counter() - t0) * 1000
                assert r.status_code == 200, r.text
    keys = [k async for k in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--no-append", action="store_true", help="print the table only (exploratory runs)")
    args = p.parse_args()
    load_start = loadavg()
    redis_url = os.environ["REDIS_URL"]
    brokers = [b for b in os.environ.get("KAFKA_BROKERS", "").split(",") if b]

    server = subprocess.Popen([sys.executable, "-c", _SYNC_SERVER], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    healthy_url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
    hole = socket.socket()  # listens, never accepts or answers: connections hang in the backlog
    hole.bind(("127.0.0.1", 0))
    hole.listen(4096)
    try:
        rows = []
        for name, url in (
            ("healthy", healthy_url),
            ("black-holed", f"http://127.0.0.1:{hole.getsockname()[1]}"),
        ):
            for mode, (ms, notifier) in (await measure(url, args.requests, redis_url, brokers)).items():
                stats = notifier.stats
                p = percentiles(ms)
                rows.append((name, mode, p[50], p[99], float(ms.max()), stats))
                print(f"{name}, {mode}: p50 {p[50]:.2f} ms, p99 {p[99]:.2f} ms, {stats}")
    finally:
        server.terminate()
        hole.close()

    transport = "Kafka (Tansu)" if brokers else "in-process bus"
    title = f"Playback: PATCH position latency, sync healthy vs black-holed ({args.requests:,} requests each)"
    notes = [
        f"in-process ASGI (httpx ASGITransport) → real Redis; events to {transport}; sync timeout 50 ms, "
        "max 64 in flight; sequential requests after 200 warm-up; one run",
        "durable: the answer waits until the event is acknowledged (as shipped); unconfirmed: the "
        "event is only queued (the behaviour before durability); two apps, requests alternating",
    ]
    lines = [
        "| sync service | answer | p50 ms | p99 ms | max ms | sync sent | failed | dropped | coalesced |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {mode} | {p50:.2f} | {p99:.2f} | {mx:.2f} | {s.sent:,} | {s.failed:,} "
        f"| {s.dropped:,} | {s.coalesced:,} |"
        for name, mode, p50, p99, mx, s in rows
    ]
    by = {(r[0], r[1]): r for r in rows}
    lines.append(
        f"\nblack-holed, durable / unconfirmed: p50 "
        f"{by['black-holed', 'durable'][2] / by['black-holed', 'unconfirmed'][2]:.2f}×, p99 "
        f"{by['black-holed', 'durable'][3] / by['black-holed', 'unconfirmed'][3]:.2f}×; "
        f"black-holed / healthy p99 (durable): "
        f"{by['black-holed', 'durable'][3] / by['healthy', 'durable'][3]:.2f}×"
    )
    write = section if args.no_append else append_section
    print(write(title, lines, notes=notes, load_at_start=load_start))


if __name__ == "__main__":
    asyncio.run(main())
