"""Soak: mixed traffic against a real ``bentoml serve`` of the gateway, watching memory and errors.

Usage::

    source /tmp/svc.env     # REDIS_URL (required)
    nice -n 5 .venv/bin/python benchmarks/soak.py [--minutes 10] [--concurrency 8]

Starts the one-port gateway (``serving.gateway:Gateway``) on loopback with
SQLite, the in-process event bus, Redis from ``REDIS_URL`` and a private
``BENTOML_HOME``; the model is fitted on first use into ``--model-dir`` (kept
between runs). Then ``--concurrency`` clients loop over a mix of requests for
``--minutes``, each as a random user with that user's token:

* ``POST /api/v1/recommendations`` (35 %), ``POST /api/v1/search`` (20 %),
* a whole playback session (35 %): ``POST /sessions``, three ``PATCH .../position``,
  ``DELETE`` (the event reaches the engine through the bus),
* ``POST /api/v1/profile/update`` with one event (10 %).

Every 10 s the resident set size (RSS) of every process in the server's tree is
sampled. The summary gives per-endpoint p50/p99 in the first and the last
minute, errors (any non-2xx, any transport error), and the RSS growth of the
largest process over the last half of the run; it exits 1 if there was an
error or that growth is 2 % or more (memory that has not plateaued), else 0.
Appends the table to benchmarks/RESULTS.md (``$SONA_BENCH_RESULTS`` redirects).

``--tracemalloc DIR`` runs the server under :mod:`tracemalloc` (slower) and
writes a snapshot of each process every minute to DIR; ``--diff DIR`` prints the
allocation sites that grew most between the first and last snapshots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from _report import append_section, loadavg, percentiles

from serving._auth import issue_token
from serving._launch import free_port, launch

SECRET = "soak-secret-0123456789abcdef0123456789"
ROOT = Path(__file__).resolve().parents[1]
TRACE_HOOK = Path(__file__).with_name("_soak_trace")
QUERIES = ["star", "love", "night", "war", "the man", "city", "space", "dead", "story", "king"]
SAMPLE_SECONDS = 10.0


@dataclass
class Stats:
    """Latencies by (minute, endpoint), errors, RSS samples."""

    #: (seconds since the start, endpoint, milliseconds) of every answered request.
    latencies: list[tuple[float, str, float]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_examples: list[str] = field(default_factory=list)
    requests: int = 0
    rss: list[tuple[float, dict[int, tuple[str, int]]]] = field(default_factory=list)


class Client:
    def __init__(
        self, http: httpx.AsyncClient, stats: Stats, started: float, users: list[str], titles: list[str]
    ):
        self.http, self.stats, self.started, self.users, self.titles = http, stats, started, users, titles
        self.tokens = {u: f"Bearer {issue_token(u, SECRET, ttl_seconds=86_400)}" for u in users}

    async def call(
        self, name: str, method: str, url: str, user: str, body: object | None = None
    ) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            r = await self.http.request(method, url, json=body, headers={"Authorization": self.tokens[user]})
        except httpx.HTTPError as exc:
            self._error(name, f"{type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - t0
        self.stats.requests += 1
        self.stats.latencies.append((time.monotonic() - self.started, name, elapsed * 1000))
        if not 200 <= r.status_code < 300:
            self._error(name, f"{r.status_code} {r.text[:200]}")
            return None
        return r

    def _error(self, name: str, text: str) -> None:
        self.stats.errors[name] += 1
        if len(self.stats.error_examples) < 10:
            self.stats.error_examples.append(f"{name}: {text}")

    async def session(self, rng: random.Random) -> None:
        user, title = rng.choice(self.users), rng.choice(self.titles)
        body = {"user_id": user, "content_id": title, "device_id": "soak-tv", "duration_seconds": 5400.0}
        r = await self.call("POST /sessions", "POST", "/api/v1/sessions", user, body)
        if r is None:
            return
        sid = r.json()["id"]
        for position in sorted(rng.uniform(0, 5400) for _ in range(3)):
            await self.call(
                "PATCH /position",
                "PATCH",
                f"/api/v1/sessions/{sid}/position",
                user,
                {"position_seconds": round(position, 1), "playback_state": "playing"},
            )
        await self.call("DELETE /sessions", "DELETE", f"/api/v1/sessions/{sid}", user)

    async def one(self, rng: random.Random) -> None:
        roll = rng.random()
        user = rng.choice(self.users)
        if roll < 0.35:
            await self.call(
                "POST /recommendations",
                "POST",
                "/api/v1/recommendations",
                user,
                {"user_id": user, "limit": 20},
            )
        elif roll < 0.55:
            await self.call("POST /search", "POST", "/api/v1/search", user, {"query": rng.choice(QUERIES)})
        elif roll < 0.90:
            await self.session(rng)
        else:
            event = {
                "event_id": uuid.uuid4().hex,
                "content_id": rng.choice(self.titles),
                "timestamp": datetime.now(UTC).isoformat(),
                "completion_rate": round(rng.random(), 3),
            }
            await self.call(
                "POST /profile/update",
                "POST",
                "/api/v1/profile/update",
                user,
                {"user_id": user, "viewing_events": [event]},
            )


def _tree_rss(root: int) -> dict[int, tuple[str, int]]:
    """``{pid: (short command, RSS bytes)}`` of ``root`` and its descendants."""
    out: dict[int, tuple[str, int]] = {}
    try:
        proc = psutil.Process(root)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            cmd = " ".join(p.cmdline()[1:4])[:60]
            out[p.pid] = (cmd, p.memory_info().rss)
        except psutil.Error:
            continue
    return out


async def _sampler(root: int, stats: Stats, started: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        stats.rss.append((time.monotonic() - started, _tree_rss(root)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
    stats.rss.append((time.monotonic() - started, _tree_rss(root)))


async def _trace_after_warm_up(trace_dir: Path | None, seconds: float = 60.0) -> None:
    """Let the traffic fill caches, pools and lazy state for ``seconds``, then tell the worker to trace."""
    if trace_dir is None:
        return
    await asyncio.sleep(seconds)
    (trace_dir / "start").touch()


async def _worker(client: Client, seed: int, deadline: float) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        await client.one(rng)


async def _run(
    base: str,
    root: int,
    minutes: float,
    concurrency: int,
    users: list[str],
    titles: list[str],
    trace_dir: Path | None = None,
) -> Stats:
    stats = Stats()
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        client = Client(http, stats, started, users, titles)
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sampler(root, stats, started, stop))
        deadline = started + minutes * 60
        tracer = asyncio.create_task(_trace_after_warm_up(trace_dir))
        await asyncio.gather(*(_worker(client, i, deadline) for i in range(concurrency)))
        await tracer
        stop.set()
        await sampler
    return stats


def _growth(stats: Stats) -> tuple[str, int, int, float]:
    """The largest process: (command, RSS at half time, RSS at the end, growth in % over the last half)."""
    last = stats.rss[-1][1]
    pid = max(last, key=lambda p: last[p][1])
    total = stats.rss[-1][0]
    half = min(stats.rss, key=lambda s: abs(s[0] - total / 2))[1]
    start_rss = half.get(pid, last[pid])[1]
    end_rss = last[pid][1]
    return last[pid][0], start_rss, end_rss, 100.0 * (end_rss - start_rss) / start_rss


def _report(stats: Stats, minutes: float, concurrency: int, load_at_start: str) -> int:
    end = max((t for t, _, _ in stats.latencies), default=0.0)
    names = sorted({n for _, n, _ in stats.latencies})
    rows = [
        "| endpoint | first minute n | p50 ms | p99 ms | last minute n | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nan = {50: float("nan"), 99: float("nan")}
    for name in names:
        first = [ms for t, n, ms in stats.latencies if n == name and t < 60]
        final = [ms for t, n, ms in stats.latencies if n == name and t >= end - 60]
        pf = percentiles(first) if first else nan
        pl = percentiles(final) if final else nan
        rows.append(
            f"| {name} | {len(first)} | {pf[50]:.1f} | {pf[99]:.1f} | {len(final)} | {pl[50]:.1f}"
            f" | {pl[99]:.1f} | {stats.errors.get(name, 0)} |"
        )
    pids = sorted({pid for _, sample in stats.rss for pid in sample})
    rss_rows = ["| t (s) | " + " | ".join(f"pid {p}" for p in pids) + " |", "|---:|" + "---:|" * len(pids)]
    for t, sample in stats.rss:
        cells = [f"{sample[p][1] / 2**20:.0f}" if p in sample else "" for p in pids]
        rss_rows.append(f"| {t:.0f} | " + " | ".join(cells) + " |")
    commands = [f"pid {p}: `{next(s[p][0] for _, s in stats.rss if p in s)}`" for p in pids]
    command, half, end, growth = _growth(stats)
    errors = sum(stats.errors.values())
    ok = errors == 0 and growth < 2.0
    verdict = (
        f"{stats.requests} requests in {minutes:g} min at concurrency {concurrency}, {errors} errors; "
        f"largest process ({command}) RSS {half / 2**20:.1f} MiB at half time -> "
        f"{end / 2**20:.1f} MiB at the end "
        f"({growth:+.2f} %; goal < 2 %): {'PASS' if ok else 'FAIL'}"
    )
    body = [*rows, "", "RSS per process (MiB), every 10 s:", "", *rss_rows, "", verdict]
    notes = [*commands, *(f"error: {e}" for e in stats.error_examples)]
    print(
        append_section(
            "Soak: mixed gateway traffic, latency and RSS over time (soak.py)",
            body,
            notes=notes,
            load_at_start=load_at_start,
        )
    )
    return 0 if ok else 1


def _diff(directory: Path, top: int = 25) -> None:
    import tracemalloc

    by_pid: dict[str, list[Path]] = defaultdict(list)
    for f in sorted(directory.glob("*.snap")):
        by_pid[f.name.split("-")[0]].append(f)
    for pid, files in by_pid.items():
        if len(files) < 2:
            continue
        first, last = tracemalloc.Snapshot.load(str(files[0])), tracemalloc.Snapshot.load(str(files[-1]))
        stats = last.compare_to(first, "traceback")
        print(f"== pid {pid}: {files[0].name} -> {files[-1].name}")
        for s in stats[:top]:
            print(f"{s.size_diff / 1024:+10.1f} KiB {s.count_diff:+8d} blocks")
            for line in s.traceback.format()[-8:]:
                print("      " + line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=300, help="distinct users drawn from the model's users")
    parser.add_argument("--model-dir", type=Path, default=ROOT / ".sona-data" / "soak-model")
    parser.add_argument("--tracemalloc", type=Path, default=None, metavar="DIR")
    parser.add_argument("--diff", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    if args.diff is not None:
        _diff(args.diff)
        return 0
    if not os.environ.get("REDIS_URL"):
        print(
            "REDIS_URL is required (e.g. source the env printed by scripts/services.sh start)",
            file=sys.stderr,
        )
        return 2
    from sona import Sona

    load_at_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="sona-soak-") as tmp:
        env = {
            "JWT_SECRET": SECRET,
            "SONA_DATA_DIR": str(Path(tmp) / "data"),
            "SONA_MODEL_DIR": str(args.model_dir),
            "DATABASE_URL": f"sqlite:///{Path(tmp) / 'soak.db'}",
            "BENTOML_HOME": str(Path(tmp) / "bentoml"),
            "SONA_RATE_LIMIT": "0",  # the soak is one client host; the limiter is measured elsewhere
        }
        if args.tracemalloc is not None:
            args.tracemalloc.mkdir(parents=True, exist_ok=True)
            env["SONA_SOAK_TRACEMALLOC"] = str(args.tracemalloc.resolve())
            env["PYTHONPATH"] = os.pathsep.join([str(TRACE_HOOK), str(ROOT)])
        with (
            (Path(tmp) / "server.log").open("w+b") as log,
            launch(
                "serving.gateway:Gateway",
                env,
                log=log,
                port=free_port(),
                timeout=900,
                drop_env=("KAFKA_BROKERS", "DATABASE_URL", "SONA_MODEL_DIR"),
            ) as (proc, base),
        ):
            engine = Sona.load(args.model_dir)
            users = [str(u) for u in engine.users_[: args.users]]
            titles = [str(it.content_id) for it in engine.catalog.items]
            del engine
            print(f"server ready at {base}; soaking for {args.minutes:g} min", flush=True)
            stats = asyncio.run(
                _run(base, proc.pid, args.minutes, args.concurrency, users, titles, args.tracemalloc)
            )
    return _report(stats, args.minutes, args.concurrency, load_at_start)


if __name__ == "__main__":
    sys.exit(main())
