"""Serving speed on a synthetic 10k-title catalog: recommend() latency and recommend_batch() throughput.

The floor is a bare numpy matrix product of user embeddings against item
embeddings (same sizes as sona's tower output) followed by an argpartition
top-k: what any embedding recommender must at least pay. sona does more per
user (several fused sources, watched-title masking, per-user standardization),
so the ratio to that floor is reported side by side from the same run.

Run: .venv/bin/python benchmarks/latency.py [--threads 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sona  # noqa: E402
from sona.datasets import SyntheticConfig, generate_synthetic  # noqa: E402

RESULTS = _HERE / "RESULTS.md"


def record(title: str, body: str) -> None:
    """Append a section to RESULTS.md with the exact command and the machine."""
    cmd = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    mach = f"{platform.platform()}, nproc={os.cpu_count()}, python {platform.python_version()}"
    mach += f", load avg {os.getloadavg()[0]:.1f}"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with open(RESULTS, "a", encoding="utf-8") as fh:
        fh.write(f"\n## {title} ({stamp})\n\n- command: `{cmd}`\n- machine: {mach}\n\n{body}\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    catalog, events = generate_synthetic(
        SyntheticConfig(n_items=10_000, n_users=args.users, events_per_user=30, seed=1)
    )
    cfg = sona.SonaConfig(epochs=3, progress=False)
    t0 = time.perf_counter()
    engine = sona.Sona(catalog, cfg).fit(events)
    fit_s = time.perf_counter() - t0
    users = np.array(sorted(events["user_id"].unique()))
    rng = np.random.default_rng(0)

    # single-user recommend()
    sample = rng.choice(users, 1000)
    for u in sample[:50]:
        engine.recommend(u, k=10)
    lat = []
    for u in sample:
        t = time.perf_counter()
        engine.recommend(u, k=10)
        lat.append(time.perf_counter() - t)
    lat_ms = np.array(lat) * 1e3

    # floor: bare matmul + top-k over the same embedding sizes, single user
    item_emb = engine.scorer_.item_embeddings.detach().numpy()
    with torch.no_grad():
        user_emb = engine.scorer_.user_embedding(engine.tower_inputs(list(users[:10_000]))).numpy()
    floor1 = []
    for i in range(1000):
        t = time.perf_counter()
        s = user_emb[i] @ item_emb.T
        np.argpartition(-s, 10)[:10]
        floor1.append(time.perf_counter() - t)
    floor1_ms = np.array(floor1) * 1e3

    # batch throughput
    batch_users = list(rng.choice(users, 10_000, replace=False))
    engine.recommend_batch(batch_users[:1024], k=10)
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        engine.recommend_batch(batch_users, k=10)
        runs.append(time.perf_counter() - t)
    batch_s = float(np.median(runs))
    fl = []
    for _ in range(3):
        t = time.perf_counter()
        for lo in range(0, len(user_emb), 1024):
            s = user_emb[lo : lo + 1024] @ item_emb.T
            np.argpartition(-s, 10, axis=1)[:, :10]
        fl.append(time.perf_counter() - t)
    floor_s = float(np.median(fl))
    ups, floor_ups = len(batch_users) / batch_s, len(user_emb) / floor_s
    table = (
        "| measure | sona | numpy floor (matmul + top-k) | ratio sona/floor | goal |\n|---|---|---|---|---|\n"
        f"| recommend() p50 | {np.percentile(lat_ms, 50):.2f} ms | {np.percentile(floor1_ms, 50):.3f} ms | "
        f"{np.percentile(lat_ms, 50) / np.percentile(floor1_ms, 50):.1f}x | |\n"
        f"| recommend() p99 | {np.percentile(lat_ms, 99):.2f} ms | {np.percentile(floor1_ms, 99):.3f} ms | "
        f"{np.percentile(lat_ms, 99) / np.percentile(floor1_ms, 99):.1f}x | <= 5 ms |\n"
        f"| recommend_batch() | {ups:,.0f} users/s | {floor_ups:,.0f} users/s | "
        f"{floor_ups / ups:.1f}x slower | "
        ">= 10,000 users/s |"
    )
    note = (
        f"Synthetic catalog: 10,000 titles, {len(users):,} users, {len(events):,} events; "
        f"collaborative source: {type(engine.collab_).__name__} (ItemKNN for > 5k titles); "
        f"fit (3 epochs) {fit_s:.1f} s; torch threads {args.threads}; k=10; "
        "median of 3 batch runs of 10,000 users."
    )
    out = f"{note}\n\n{table}"
    print(out)
    if not args.no_record:
        record("Latency on a 10k-title synthetic catalog (benchmarks/latency.py)", out)


if __name__ == "__main__":
    main()
