"""Per-user LoRA lift across base-model seeds: how much of the headline figure is seed noise.

Run: ``python benchmarks/lora_seeds.py [--seeds 3]``. Prints a table and appends it
to benchmarks/RESULTS.md.

benchmarks/lora.py reports one lift, for the engine fit with seed 0. The base
model's seed changes the tower the adapters attach to, so the lift moves with
it. This script keeps everything else fixed: the engine configuration chosen
on validation exactly as lora.py chooses it, and the library's default adapter
configuration (no per-seed tuning). For each seed it fits the engine twice,
on the validation split (first 80% of each user's train events, scored on the
last 20%) and on the whole of train (scored on test), and trains adapters for
every user from that engine's own events.

Nothing here selects anything: the test column is a spread, not a choice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import pandas as pd
import torch
from _report import append_section, loadavg
from lora import ROOT, _lift_rows, tuned_config

import sona
from sona.evaluation._split import temporal_split
from sona.lora import UserAdapterConfig, train_adapters


def _lift(cfg: sona.SonaConfig, catalog: sona.Catalog, fit: pd.DataFrame, held: pd.DataFrame) -> list[float]:
    """Relative NDCG@10 lift of default adapters: all users, then each activity bucket."""
    engine = sona.Sona(catalog, cfg).fit(fit)
    users = [str(u) for u in pd.unique(held["user_id"])]
    summary = train_adapters(engine, users, config=UserAdapterConfig(min_interval_seconds=0))
    rows, _ = _lift_rows(engine, users, fit, held, set(summary.trained))
    return [a["ndcg"] / b["ndcg"] - 1.0 for _, _, _, b, a in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="base-model seeds 0..N-1")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_at_start = loadavg()
    started = time.perf_counter()
    catalog, events = sona.datasets.load_movielens(ROOT.parent / "shared" / "datasets" / "ml-100k")
    train, test = temporal_split(events, 0.2)
    base_cfg, _, tr, va, note = tuned_config(catalog, train)
    cells, val_all, test_all = [], [], []
    for seed in range(args.seeds):
        cfg = replace(base_cfg, seed=seed)
        val = _lift(cfg, catalog, tr, va)
        tst = _lift(cfg, catalog, train, test)
        val_all.append(val[0])
        test_all.append(tst[0])
        cells.append(
            f"| {seed} | {val[0]:+.1%} | {tst[0]:+.1%} | " + " | ".join(f"{x:+.1%}" for x in tst[1:]) + " |"
        )
        print(cells[-1], flush=True)
    cfg = UserAdapterConfig()
    out = [
        "### NDCG@10 lift of adapters across base-model seeds",
        "",
        f"Engine: {note}, seed varied. Adapters: the library default (rank {cfg.rank}, {cfg.loss} loss, "
        f"target fraction {cfg.target_fraction}, shrinkage {cfg.shrinkage}), not tuned per seed. "
        "Validation: engine on the first 80% of each user's train events, scored on the last 20%. "
        "Test: engine on train, scored on test (the core temporal protocol). "
        f"Took {time.perf_counter() - started:.0f} s.",
        "",
        "| seed | validation, all | test, all | test 10–30 | test 30–100 | test 100+ |",
        "|---:|---:|---:|---:|---:|---:|",
        *cells,
        f"| mean | {statistics.mean(val_all):+.1%} | {statistics.mean(test_all):+.1%} | | | |",
        "",
    ]
    print(
        append_section(
            "Per-user LoRA across seeds (`benchmarks/lora_seeds.py`)",
            out,
            notes=[f"torch {torch.__version__}"],
            torch_threads="1",
            load_at_start=load_at_start,
        )
    )


if __name__ == "__main__":
    main()
