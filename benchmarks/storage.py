"""Bulk throughput of `Storage.add_events` on SQLite and PostgreSQL.

Usage::

    source /tmp/svc.env   # or any SONA_TEST_POSTGRES_URL / DATABASE_URL pointing at PostgreSQL
    .venv/bin/python benchmarks/storage.py [--events 50000] [--repeats 3] [--batch 0]

Each repeat uses a fresh database. Measured per backend (median of repeats):
insert of N new events from a DataFrame (validation included), replay of the
same N (all duplicates, nothing written), a ViewingEvent-object batch, and
reading everything back as a DataFrame. Appends a table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from _databases import postgres_db
from _report import append_section

from sona import ViewingEvent
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.storage import Storage


@contextmanager
def sqlite_db() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        yield f"sqlite:///{d}/bench.db"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_once(url: str, frame: pd.DataFrame, objects: list[ViewingEvent], batch: int) -> dict[str, float]:
    storage = Storage(url)
    storage.upgrade()
    n = len(frame)
    step = batch or n

    def insert() -> None:
        for lo in range(0, n, step):
            res = storage.add_events(frame.iloc[lo : lo + step])
            assert res.duplicates == 0, res.duplicates

    def replay() -> None:
        for lo in range(0, n, step):
            assert storage.add_events(frame.iloc[lo : lo + step]).inserted == 0

    def insert_objects() -> None:
        for lo in range(0, len(objects), step):
            storage.add_events(objects[lo : lo + step])

    out = {
        "insert (DataFrame)": n / timed(insert),
        "replay (all duplicates)": n / timed(replay),
        "insert (ViewingEvent objects)": len(objects) / timed(insert_objects),
    }
    t = timed(lambda: storage.events_for_users())
    out["read back (events_for_users)"] = (n + len(objects)) / t
    storage.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=0, help="events per add_events call (0 = all at once)")
    args = ap.parse_args()

    n_users = max(1, args.events // 40 + args.events // 400)  # Poisson counts: leave a margin
    _, events = generate_synthetic(SyntheticConfig(n_users=n_users, n_items=2_000, seed=0))
    frame = events.iloc[: args.events].reset_index(drop=True)
    n = len(frame)
    objects = [
        ViewingEvent(
            user_id=f"obj{i % 500}",
            content_id=f"c{i % 2000}",
            timestamp=datetime.fromtimestamp(1_700_000_000 + i, tz=UTC),
            completion_rate=0.5,
        )
        for i in range(n // 5)
    ]
    backends: dict[str, Callable[[], object]] = {"SQLite (file, WAL)": sqlite_db}
    server = os.environ.get("SONA_TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL", "")
    if server.startswith("postgres"):
        backends["PostgreSQL"] = lambda: postgres_db(server)
    else:
        print("PostgreSQL skipped: set SONA_TEST_POSTGRES_URL", file=sys.stderr)

    results: dict[str, dict[str, float]] = {}
    for name, make in backends.items():
        runs = []
        for _ in range(args.repeats):
            with make() as url:  # type: ignore[attr-defined]
                runs.append(run_once(url, frame, objects, args.batch))
        results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    names = list(results)
    header = f"| operation (events/s, median of {args.repeats}) | {' | '.join(names)} |"
    lines = [header, "|---|" + "---:|" * len(names)]
    for op in results[names[0]]:
        cells = " | ".join(f"{results[b][op]:,.0f}" for b in names)
        lines.append(f"| {op} | {cells} |")
    if len(names) == 2:
        ratio = results[names[1]]["insert (DataFrame)"] / results[names[0]]["insert (DataFrame)"]
        lines.append(f"\nPostgreSQL / SQLite bulk-insert ratio: {ratio:.2f}×")
    table = "\n".join(lines)
    print(table)

    append_section(
        f"Storage: bulk add_events ({n:,} events, batch={args.batch or 'all'})",
        table,
        notes=[f"SQLAlchemy {sa.__version__}"],
    )


if __name__ == "__main__":
    main()
