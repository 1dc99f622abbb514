"""Worker memory against the users it has served, with and without the user bound (SONA_USER_CACHE_SIZE).

Usage::

    nice -n 5 .venv/bin/python benchmarks/user_cache.py [--users 20000] [--bound 1000]

A small synthetic model is fitted on 300 users; ``--users`` further users who are
not in the model get ``--events`` stored viewing events each (SQLite, one file).
Then a real ``bentoml serve`` of the SONA service answers ``/recommendations``
for every one of them once (concurrency 8), twice side by side: with
``SONA_USER_CACHE_SIZE=--bound`` and with a bound above ``--users`` (nothing is
ever dropped, as before the bound existed). Each user's first request reads
their events from the database into the worker's engine; the bound drops the
least recently served again. Reports the worker's resident set size (RSS)
after a warm-up of 200 users and after all users, requests/s, p50/p99 latency
and ``sona_users_dropped_total``. Appends the table to benchmarks/RESULTS.md
(``$SONA_BENCH_RESULTS`` redirects).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from _report import append_section, loadavg, percentiles

from serving._auth import SERVICE_SCOPE, issue_token
from serving._launch import launch
from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.storage import Storage

SECRET = "user-cache-secret-0123456789abcdef0123"
MODEL_USERS = 300
WARM_UP = 200


def _prepare(work: Path, users: int, events: float) -> tuple[Path, str, list[str]]:
    """The model directory, the database URL and the ids of the users outside the model."""
    catalog, frame = generate_synthetic(
        SyntheticConfig(n_items=2_000, n_users=MODEL_USERS + users, events_per_user=events, seed=3)
    )
    ids = frame["user_id"].astype(str)
    model_users = set(ids.unique()[:MODEL_USERS])
    fitted = frame[ids.isin(model_users)]
    model = work / "model"
    Sona(catalog, SonaConfig(epochs=2, progress=False, seed=0)).fit(fitted).save(model)
    url = f"sqlite:///{work / 'bench.db'}"
    storage = Storage(url)
    try:
        storage.upgrade()
        storage.upsert_content(catalog)
        storage.add_events(frame)  # the model's users and every other user's stored history
    finally:
        storage.dispose()
    others = sorted(set(ids.unique()) - model_users)
    return model, url, others


def _worker_rss(root: int) -> int:
    """RSS of the largest process in the server's tree (the worker that holds the engine)."""
    procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    return max(p.memory_info().rss for p in procs if p.is_running())


async def _requests(base: str, users: list[str], concurrency: int) -> list[float]:
    headers = {"Authorization": f"Bearer {issue_token('bench', SECRET, scopes=(SERVICE_SCOPE,))}"}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for u in users:
        queue.put_nowait(u)
    seconds: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as http:

        async def one() -> None:
            while not queue.empty():
                user = queue.get_nowait()
                t0 = time.perf_counter()
                r = await http.post("/api/v1/recommendations", json={"user_id": user, "limit": 10})
                seconds.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{user}: {r.status_code} {r.text[:200]}")

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return seconds


def _dropped(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    found = re.search(r"^sona_users_dropped_total (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def _run(
    work: Path, model: Path, url: str, users: list[str], bound: int, concurrency: int
) -> dict[str, float]:
    env = {
        "SONA_DATA_DIR": str(work / f"data-{bound}"),
        "SONA_MODEL_DIR": str(model),
        "DATABASE_URL": url,
        "JWT_SECRET": SECRET,
        "SONA_USER_CACHE_SIZE": str(bound),
    }
    service = "serving.sona_service:SonaService"
    with (
        tempfile.TemporaryFile(mode="w+b") as log,
        launch(service, env, log=log, timeout=300, drop_env=("KAFKA_BROKERS",)) as (proc, base),
    ):
        asyncio.run(_requests(base, users[:WARM_UP], concurrency))
        rss_warm = _worker_rss(proc.pid)
        t0 = time.perf_counter()
        seconds = asyncio.run(_requests(base, users[WARM_UP:], concurrency))
        wall = time.perf_counter() - t0
        rss_end = _worker_rss(proc.pid)
        p = percentiles(seconds)
        return {
            "rss_warm": rss_warm / 2**20,
            "rss_end": rss_end / 2**20,
            "rps": len(seconds) / wall,
            "p50": p[50] * 1e3,
            "p99": p[99] * 1e3,
            "dropped": _dropped(base),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000, help="users outside the model, each served once")
    parser.add_argument("--events", type=float, default=50.0, help="stored events per user (mean)")
    parser.add_argument("--bound", type=int, default=1_000, help="SONA_USER_CACHE_SIZE of the bounded run")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    load_at_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="sona-user-cache-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        model, url, users = _prepare(work, args.users, args.events)
        print(f"prepared {len(users)} users in {time.perf_counter() - t0:.0f} s", flush=True)
        runs = {}
        for label, bound in (("bounded", args.bound), ("unbounded", args.users + 10_000)):
            runs[label] = _run(work, model, url, users, bound, args.concurrency)
            print(label, runs[label], flush=True)
    rows = [
        "| SONA_USER_CACHE_SIZE | worker RSS after 200 users | after all users | growth "
        "| req/s | p50 ms | p99 ms | users dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, bound in (("bounded", args.bound), ("unbounded", args.users + 10_000)):
        r = runs[label]
        rows.append(
            f"| {bound:,} ({label}) | {r['rss_warm']:.0f} MiB | {r['rss_end']:.0f} MiB "
            f"| {r['rss_end'] - r['rss_warm']:+.0f} MiB | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} "
            f"| {r['dropped']:.0f} |"
        )
    table = "\n".join(rows)
    print(table)
    append_section(
        "User bound: worker memory against users served (user_cache.py)",
        table,
        notes=[
            f"{args.users:,} users outside the model, about {args.events:.0f} stored events each, each "
            f"requested once at concurrency {args.concurrency} (every request is that user's first); "
            "SONA service, 1 worker, SQLite; the two runs one after the other on the same data",
        ],
        load_at_start=load_at_start,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
