"""Latency of ``PATCH /api/v1/sessions/{id}/position`` with the sync service healthy vs black-holed.

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


async def measure(
    sync_url: str, n: int, redis_url: str, brokers: list[str]
) -> tuple[np.ndarray, SyncNotifier]:
    redis = aioredis.from_url(redis_url)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    producer: EventProducer = (
        KafkaEventProducer(brokers, Topics(f"bench{uuid.uuid4().hex[:8]}"), partitions=3)
        if brokers
        else InProcessEventBus(_discard)
    )
    notifier = SyncNotifier(sync_url)
    app = create_app(
        redis=redis, producer=producer, notifier=notifier, jwt_secret=SECRET, namespace=namespace
    )
    headers = {"Authorization": f"Bearer {issue_token('bench-user', SECRET)}"}
    body = {"user_id": "bench-user", "content_id": "c1", "device_id": "tv", "duration_seconds": 1e9}
    latencies = np.empty(n)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://playback") as client:
            sid = (await client.post("/api/v1/sessions", json=body, headers=headers)).json()["id"]
            url = f"/api/v1/sessions/{sid}/position"
            for i in range(200):  # warm-up
                await client.patch(url, json={"position_seconds": i}, headers=headers)
            for i in range(n):
                t0 = time.perf_counter()
                r = await client.patch(url, json={"position_seconds": 200 + i}, headers=headers)
                latencies[i] = time.perf_counter() - t0
                assert r.status_code == 200, r.text
    keys = [k async for k in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    return latencies * 1000, notifier


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
            ms, notifier = await measure(url, args.requests, redis_url, brokers)
            stats = notifier.stats
            p = percentiles(ms)
            rows.append((name, p[50], p[99], float(ms.max()), stats))
            print(f"{name}: p50 {rows[-1][1]:.2f} ms, p99 {rows[-1][2]:.2f} ms, {stats}")
    finally:
        server.terminate()
        hole.close()

    transport = "Kafka (Tansu)" if brokers else "in-process bus"
    title = f"Playback: PATCH position latency, sync healthy vs black-holed ({args.requests:,} requests each)"
    notes = [
        f"in-process ASGI (httpx ASGITransport) → real Redis; events to {transport}; sync timeout 50 ms, "
        "max 64 in flight; sequential requests after 200 warm-up; one run",
    ]
    lines = [
        "| sync service | p50 ms | p99 ms | max ms | sync sent | failed | dropped | coalesced |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {p50:.2f} | {p99:.2f} | {mx:.2f} | {s.sent:,} | {s.failed:,} | {s.dropped:,} "
        f"| {s.coalesced:,} |"
        for name, p50, p99, mx, s in rows
    ]
    lines.append(f"\nblack-holed / healthy p99 ratio: {rows[1][2] / rows[0][2]:.2f}×")
    write = section if args.no_append else append_section
    print(write(title, lines, notes=notes, load_at_start=load_start))


if __name__ == "__main__":
    asyncio.run(main())
