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

import sys
from pathlib import Path

# This file is named like the stdlib ``http`` package; drop its own directory from
# the import path so ``import http.client`` (httpx, PyJWT) finds the real one.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
ROOT = _HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import secrets  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from serving._auth import SERVICE_SCOPE, issue_token  # noqa: E402
from serving._engine import load_or_fit_engine, training_data  # noqa: E402
from serving._launch import serve  # noqa: E402
from sona import load_settings  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"


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
                    p50, p99 = (float(np.percentile(lat, q)) * 1e3 for q in (50, 99))
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
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"load average after the run {load}"
    )
    command = "python benchmarks/http_latency.py " + " ".join(sys.argv[1:])
    section = (
        f"\n## HTTP latency (`benchmarks/http_latency.py`) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"- machine: {machine}; Python {platform.python_version()}\n"
        f"- command: `{command.strip()}`\n"
        f"- server: `bentoml serve serving.sona_service:SonaService` (1 worker), engine from {source}, "
        f"SQLite; load generator (httpx, asyncio, closed loop) on the same machine; "
        f"{args.requests} requests per row after {args.warmup} warm-up; limit={args.limit}\n\n"
        f"{table}\n"
    )
    with RESULTS.open("a") as fh:
        fh.write(section)
    print(f"\nappended to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
