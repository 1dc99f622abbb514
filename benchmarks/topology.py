"""The multi-process topology, measured: replicas on one PostgreSQL, following its change feed.

Two ``bentoml serve serving.sona_service:SonaService`` replicas (A and B, own data
directories, ``SONA_ADAPTER_STORE=database``) share a throw-away PostgreSQL
database holding the ml-100k model (published), its catalog and events.

- **event → visible on B**: ``POST /profile/update`` on A marks B's top title as
  watched; the time until B's list no longer holds it (B polled every 10 ms);
- **adapter pickup**: this process stores a new adapter version for a user (as the
  cron job or another replica would); the time until B serves it;
- **model swap**: a second model (another seed) is published while 4 threads
  request B in a loop; the time until B serves the new model, and failed requests;
- **time to ready** of a replica with 100k stored events, and again with 1M
  (900k synthetic events added): start-up reads no history, so it should not grow;
- **/recommendations req/s** of one replica with 1 and with 2 workers, side by side (interleaved,
  twice): users read from the database on their first request, and users already resident.

    .venv/bin/python benchmarks/topology.py [--samples 60] [--requests 1500] [--no-million]

Needs ``SONA_TEST_POSTGRES_URL`` (``scripts/services.sh start``) and ml-100k
(``SONA_MOVIELENS`` or ``../shared/datasets/ml-100k``; else the synthetic fallback).
The load generator shares the machine's cores with the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from _databases import postgres_db
from _report import append_section, loadavg, percentiles, results_path

from serving._auth import SERVICE_SCOPE, issue_token
from serving._engine import training_data
from serving._launch import launch
from sona import Sona, SonaConfig, Storage
from sona.lora import DatabaseAdapterStore, UserAdapterConfig, attach_adapters
from sona_app.bootstrap import LiveEngine, publish_model, resolve_model
from sona_app.settings import Settings, load_settings

API = "/api/v1"
SERVICE = "serving.sona_service:SonaService"


def _until(check: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"not within {timeout} s")
        time.sleep(step)
    return time.perf_counter() - t0


class Client:
    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"})

    def titles(self, user: str, limit: int = 10) -> list[str]:
        r = self.http.post(f"{API}/recommendations", json={"user_id": user, "limit": limit})
        r.raise_for_status()
        return [x["content_id"] for x in r.json()["recommendations"]]

    def scores(self, user: str, titles: list[str]) -> list[float]:
        r = self.http.post(f"{API}/personalization/score", json={"user_id": user, "content_ids": titles})
        r.raise_for_status()
        return [s["score"] for s in r.json()["scores"]]

    def watch(self, user: str, title: str) -> None:
        event = {"content_id": title, "completion_rate": 1.0, "timestamp": datetime.now(UTC).isoformat()}
        body = {"user_id": user, "viewing_events": [event]}
        self.http.post(f"{API}/profile/update", json=body).raise_for_status()


@contextmanager
def _replica(env: dict[str, str], log: Path) -> Iterator[tuple[str, float]]:
    """A running replica and the seconds it took from process start to ``/ready``."""
    with open(log, "w+b") as fh:
        t0 = time.perf_counter()
        with launch(SERVICE, env, log=fh, timeout=600) as (_, base):
            yield base, time.perf_counter() - t0


async def _throughput(base: str, token: str, users: list[str], n: int, concurrency: int) -> float:
    """Requests per second of ``n`` /recommendations requests from ``concurrency`` closed-loop clients."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    picks = iter([users[i % len(users)] for i in range(n)])
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:

        async def worker() -> None:
            for user in picks:
                r = await client.post(f"{API}/recommendations", json={"user_id": user, "limit": 20})
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


def _synthetic_events(catalog_ids: np.ndarray, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "event_id": [f"bulk-{seed}-{i}" for i in range(n)],
            "user_id": [f"bulk-{u}" for u in rng.integers(0, 50_000, n)],
            "content_id": catalog_ids[rng.integers(0, len(catalog_ids), n)],
            "timestamp": pd.Timestamp("2026-06-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 10**7, n), "s"),
            "completion_rate": rng.uniform(0.05, 1.0, n),
        }
    )


def main() -> int:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=60, help="event → visible samples")
    parser.add_argument("--adapters", type=int, default=10, help="adapter pickup samples")
    parser.add_argument("--requests", type=int, default=1500, help="requests per throughput cell")
    parser.add_argument("--no-million", action="store_true", help="skip the 1M-events start-up")
    parser.add_argument("--postgres", default=os.environ.get("SONA_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    if not args.postgres:
        parser.error("set SONA_TEST_POSTGRES_URL or pass --postgres")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    load0 = loadavg()

    settings = load_settings()
    catalog, events, source = training_data(settings)
    print(f"fitting two models on {source} ...", flush=True)
    first = Sona(catalog, SonaConfig(seed=0, progress=False)).fit(events)
    second = Sona(catalog, SonaConfig(seed=1, progress=False)).fit(events)
    users = sorted(events["user_id"].astype(str).unique())
    secret = secrets.token_urlsafe(32)
    token = issue_token("bench", secret, ttl_seconds=7200, scopes=(SERVICE_SCOPE,))
    rows: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory() as tmp_name, postgres_db(args.postgres) as url:
        tmp = Path(tmp_name)
        storage = Storage(url)
        storage.upgrade()
        storage.upsert_content(catalog)
        storage.add_events(events)
        publish_model(storage, first.save(tmp / "m1"), source=source)

        def env(name: str, **extra: str) -> dict[str, str]:
            return {
                "DATABASE_URL": url,
                "SONA_DATA_DIR": str(tmp / name),
                "SONA_ADAPTER_STORE": "database",
                "JWT_SECRET": secret,
                "SONA_RATE_LIMIT": "0",  # the load generator is one caller
                **extra,
            }

        with (
            _replica(env("a"), tmp / "a.log") as (base_a, _),
            _replica(env("b"), tmp / "b.log") as (base_b, ready_100k),
        ):
            a, b = Client(base_a, token), Client(base_b, token)
            print(f"replica B ready in {ready_100k:.1f} s with {len(events):,} stored events", flush=True)

            # event → visible on the other replica
            lat = []
            rng = np.random.default_rng(0)
            for user in rng.choice(users, args.samples, replace=False):
                top = b.titles(str(user))[0]
                a.watch(str(user), top)
                lat.append(_until(lambda u=str(user), t=top: t not in b.titles(u), 10))
            p = percentiles(np.array(lat) * 1e3)
            rows.append(
                (
                    "event on A → visible on B (`/profile/update`)",
                    f"p50 {p[50]:.0f} ms, p99 {p[99]:.0f} ms (n={len(lat)})",
                )
            )
            print(rows[-1], flush=True)

            # adapter pickup
            store = DatabaseAdapterStore(storage)
            cfg = UserAdapterConfig()
            adapters = attach_adapters(first, config=cfg)
            probe = [it.content_id for it in catalog.items[:50]]
            pick = []
            for i, user in enumerate(rng.choice(users, args.adapters, replace=False)):
                uid = str(user)
                before = b.scores(uid, probe)
                weights = adapters.create(uid)
                gen = np.random.default_rng(i)
                weights.lora_B = {m: t + 0.05 * _tensor(gen, t.shape) for m, t in weights.lora_B.items()}
                weights.model_id = first.model_id_
                store.save(weights, cfg)  # returns once committed: "stored"
                t0 = time.perf_counter()
                _until(lambda u=uid, s=before: b.scores(u, probe) != s, 10)
                pick.append(time.perf_counter() - t0)
            p = percentiles(np.array(pick) * 1e3, (50, 100))
            rows.append(
                (
                    "new adapter version committed → served by B",
                    f"p50 {p[50]:.0f} ms, max {p[100]:.0f} ms (n={len(pick)})",
                )
            )
            print(rows[-1], flush=True)

            # model swap under load
            failures, served, stop = [0], [0], threading.Event()

            def hammer(user: str) -> None:
                client = Client(base_b, token)
                while not stop.is_set():
                    try:
                        client.titles(user)
                        served[0] += 1
                    except httpx.HTTPError:
                        failures[0] += 1

            threads = [threading.Thread(target=hammer, args=(users[i],)) for i in range(4)]
            for t in threads:
                t.start()
            try:
                probe_user = users[5]
                before = b.scores(probe_user, probe)
                t0 = time.perf_counter()
                publish_model(storage, second.save(tmp / "m2"), source=source + " seed 1")
                _until(lambda: b.scores(probe_user, probe) != before, 120, step=0.05)
                swap = time.perf_counter() - t0
                time.sleep(1.0)
            finally:
                stop.set()
                for t in threads:
                    t.join()
            rows.append(
                (
                    "model published → served by B (load aside + swap), 4 clients looping",
                    f"{swap:.2f} s; {failures[0]} failed of {served[0]} requests",
                )
            )
            print(rows[-1], flush=True)

        # requests per second, 1 vs 2 workers, side by side, twice (interleaved: 1, 2, 1, 2):
        # "first requests": every request is some worker's first for its user (read from the database);
        # "resident users": 100 users every worker already holds (the steady state of a warm cache).
        hot = users[:100]
        cells: dict[tuple[str, int], list[float]] = {}
        for workers in (1, 2, 1, 2):
            extra = {"BENTOML_CONFIG_OPTIONS": f"services.sona.workers={workers}"}
            with _replica(env(f"w{workers}", **extra), tmp / f"w{workers}.log") as (base, _):
                first = asyncio.run(_throughput(base, token, users, len(users), 16))
                asyncio.run(_throughput(base, token, hot, 1000, 16))  # each worker reads every hot user
                resident = asyncio.run(_throughput(base, token, hot, args.requests, 16))
            cells.setdefault(("first", workers), []).append(first)
            cells.setdefault(("resident", workers), []).append(resident)
            print(f"{workers} worker(s): {first:.0f} req/s first, {resident:.0f} resident", flush=True)
        for kind, label in (("first", "first request per user"), ("resident", "resident users")):
            one, two = (float(np.median(cells[(kind, w)])) for w in (1, 2))
            rows.append(
                (
                    f"`/recommendations` req/s, 1 vs 2 workers (c=16), {label}, median of 2",
                    f"{one:.0f} vs {two:.0f} ({two / one:.2f}x)",
                )
            )

        ready = {len(events): ready_100k}
        resolve = {len(events): _resolve_seconds(settings, storage, tmp / "probe-100k")}
        # (the 1M figures come after the 900k extra events are stored)
        if not args.no_million:
            extra_n = 1_000_000 - len(events)
            t0 = time.perf_counter()
            for lo in range(0, extra_n, 50_000):
                storage.add_events(_synthetic_events(catalog.ids, min(50_000, extra_n - lo), lo))
            print(f"stored {extra_n:,} more events in {time.perf_counter() - t0:.0f} s", flush=True)
            with _replica(env("c"), tmp / "c.log") as (_, seconds):
                ready[1_000_000] = seconds
            resolve[1_000_000] = _resolve_seconds(settings, storage, tmp / "probe-1m")
        rows.append(
            (
                "time to ready (process start → `/ready`)",
                ", ".join(f"{n:,} stored events: {s:.1f} s" for n, s in ready.items()),
            )
        )
        rows.append(
            (
                "of which in-process model resolution (archive from the database, unpack, load)",
                ", ".join(f"{n:,} stored events: {s:.1f} s" for n, s in resolve.items()),
            )
        )
        storage.dispose()

    lines = ["| what | result |", "|---|---|", *(f"| {w} | {r} |" for w, r in rows)]
    table = "\n".join(lines)
    print("\n" + table)
    append_section(
        "Topology: replicas on one PostgreSQL (`benchmarks/topology.py`)",
        table,
        notes=[
            f"model fitted on {source}; replicas: `bentoml serve {SERVICE}` on one machine, "
            "PostgreSQL from scripts/services.sh, change feed polled every 200 ms; "
            "load generator on the same cores",
        ],
        load_at_start=load0,
    )
    print(f"\nappended to {results_path()}")
    return 0


def _resolve_seconds(settings: Settings, storage: Storage, data_dir: Path) -> float:
    """In-process share of a start-up: resolve the current model from the database (unpack + load)."""
    t0 = time.perf_counter()
    engine = resolve_model(replace(settings, data_dir=data_dir), storage)
    assert engine is not None
    LiveEngine(engine, storage, settings=settings)
    return time.perf_counter() - t0


def _tensor(gen: np.random.Generator, shape: tuple[int, ...]) -> object:
    import torch

    return torch.from_numpy(gen.standard_normal(shape).astype(np.float32))


if __name__ == "__main__":
    raise SystemExit(main())
