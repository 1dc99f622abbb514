"""Serving speed on a synthetic 10k-title catalog: recommend() latency and recommend_batch() throughput.

The floor is a bare numpy matrix product of user embeddings against item
embeddings (same sizes as sona's tower output) followed by an argpartition
top-k: what any embedding recommender must at least pay. sona does more per
user (several fused sources, watched-title masking, per-user standardization),
so the ratio to that floor is reported side by side from the same run.

Run: .venv/bin/python benchmarks/latency.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch
from _report import append_section, percentiles

import sona
from sona.datasets import SyntheticConfig, generate_synthetic


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
        s = user_emb[i % len(user_emb)] @ item_emb.T
        np.argpartition(-s, 10)[:10]
        floor1.append(time.perf_counter() - t)
    floor1_ms = np.array(floor1) * 1e3

    # batch throughput
    batch_users = list(rng.choice(users, min(10_000, len(users)), replace=False))  # < 10k: smoke runs
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
    p, pf = percentiles(lat_ms), percentiles(floor1_ms)
    table = (
        "| measure | sona | numpy floor (matmul + top-k) | ratio sona/floor | goal |\n|---|---|---|---|---|\n"
        f"| recommend() p50 | {p[50]:.2f} ms | {pf[50]:.3f} ms | {p[50] / pf[50]:.1f}x | |\n"
        f"| recommend() p99 | {p[99]:.2f} ms | {pf[99]:.3f} ms | {p[99] / pf[99]:.1f}x | <= 5 ms |\n"
        f"| recommend_batch() | {ups:,.0f} users/s | {floor_ups:,.0f} users/s | "
        f"{floor_ups / ups:.1f}x slower | "
        ">= 10,000 users/s |"
    )
    note = (
        f"Synthetic catalog: 10,000 titles, {len(users):,} users, {len(events):,} events; "
        f"collaborative source: {'ItemKNN (sparse)' if sp.issparse(engine.collab_) else 'EASE (dense)'}; "
        f"fit (3 epochs) {fit_s:.1f} s; torch threads {args.threads}; k=10; "
        f"median of 3 batch runs of {len(batch_users):,} users."
    )
    out = f"{note}\n\n{table}"
    print(out)
    if not args.no_record:
        append_section(
            "Latency on a 10k-title synthetic catalog (benchmarks/latency.py)",
            out,
            torch_threads=args.threads,
        )


if __name__ == "__main__":
    main()
