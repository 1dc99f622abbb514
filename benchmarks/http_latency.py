"""HTTP latency of POST /api/v1/recommendations against a real `bentoml serve`, next to a no-op.

The no-op endpoint (``POST /api/v1/noop``) runs the same JWT check, body
parsing and response serialization as /recommendations but never calls the
engine, so the ratio of the two isolates what the engine adds on top of the
HTTP stack. Both are measured on the same server in one run, at concurrency 1
and 16. Goal: /recommendations p99 <= 2x the no-op's p99.

    .venv/bin/python benchmarks/http_latency.py [--requests 400] [--model-dir DIR]

Without ``--model-dir`` the engine in ``$SONA_MODEL_DIR`` (default
``.sona-data/model``) is used, fitted first if absent (ml-100k when present).
The load generator runs on the same machine as the server, so on a 2-core
box both share the CPUs; the no-op column pays the same tax.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _report import append_section, percentiles, results_path

from serving._auth import SERVICE_SCOPE, issue_token
from serving._engine import load_or_fit_engine, training_data
from serving._launch import serve
from sona_app.settings import load_settings


async def _run(
    base: str, path: str, token: str, users: list[str], n: int, concurrency: int, limit: int
) -> np.ndarray:
    """Latencies (s) of ``n`` requests issued by ``concurrency`` closed-loop workers."""
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    rng = np.random.default_rng(0)
    picks = [users[i] for i in rng.integers(0, len(users), n)]
    it = iter(picks)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            for user in it:
                t0 = time.perf_counter()
                r = await client.post(path, json={"user_id": user, "limit": limit})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{path} -> {r.status_code}: {r.text[:300]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return np.asarray(latencies)


def main() -> int:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--requests", type=int, default=400, help="measured requests per cell")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--limit", type=int, default=20, help="recommendations per request")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    env = dict(os.environ)
    if args.model_dir is not None:
        env["SONA_MODEL_DIR"] = str(args.model_dir)
    settings = load_settings(env)
    model_dir = settings.engine_dir.resolve()
    if not (model_dir.exists() and any(model_dir.iterdir())):
        print(f"fitting an engine into {model_dir} first ...", flush=True)
        load_or_fit_engine(settings)
    _, events, source = training_data(settings)
    users = sorted(events["user_id"].astype(str).unique())

    secret = secrets.token_urlsafe(32)
    token = issue_token("bench", secret, ttl_seconds=3600, scopes=(SERVICE_SCOPE,))
    rows: list[tuple[str, int, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server_env = {
            "JWT_SECRET": secret,
            "SONA_MODEL_DIR": str(model_dir),
            "SONA_DATA_DIR": tmp,
            "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        }
        with serve(server_env) as base:
            for concurrency in (1, 16):
                for path in ("/api/v1/noop", "/api/v1/recommendations"):
                    asyncio.run(_run(base, path, token, users, args.warmup, concurrency, args.limit))
                    t0 = time.perf_counter()
                    lat = asyncio.run(_run(base, path, token, users, args.requests, concurrency, args.limit))
                    wall = time.perf_counter() - t0
                    p = percentiles(lat * 1e3)
                    p50, p99 = p[50], p[99]
                    rows.append((path, concurrency, p50, p99, len(lat) / wall))
                    print(f"{path:28s} c={concurrency:<3d} p50={p50:7.2f} ms  p99={p99:7.2f} ms", flush=True)

    lines = [
        "| endpoint | concurrency | p50 ms | p99 ms | req/s | p99 / no-op p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    noop_p99 = {c: p99 for path, c, _, p99, _ in rows if path.endswith("noop")}
    for path, c, p50, p99, rps in rows:
        lines.append(f"| `{path}` | {c} | {p50:.2f} | {p99:.2f} | {rps:.0f} | {p99 / noop_p99[c]:.2f}x |")
    table = "\n".join(lines)
    print()
    print(table)
    append_section(
        "HTTP latency (`benchmarks/http_latency.py`)",
        table,
        notes=[
            "server: `bentoml serve serving.sona_service:SonaService` (1 worker), engine from "
            f"{source}, SQLite; load generator (httpx, asyncio, closed loop) on the same machine; "
            f"{args.requests} requests per row after {args.warmup} warm-up; limit={args.limit}",
        ],
    )
    print(f"\nappended to {results_path()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
