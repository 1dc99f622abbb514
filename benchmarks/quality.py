"""Ranking quality on MovieLens-100k: Pop, ItemKNN, EASE and sona under one honest protocol.

Protocol: temporal per-user 80/20 split; full ranking over every unseen title
(no sampled negatives); K=10. Every hyperparameter (EASE lambda, ItemKNN
neighbours, sona's fusion weights) is chosen on a validation split cut from
TRAIN only (the last 20% of each user's train events); test figures are
computed once, after refitting on the whole train part with the chosen values.

New-user scenario: a fixed random 20% of users (seed 0) is left out of fit;
the first half of each one's history goes through observe(), the second half
is test. EASE folds them in (x_u @ B) and Pop ranks by popularity.

Run: .venv/bin/python benchmarks/quality.py [--data ../shared/datasets/ml-100k]
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _report import append_section

import sona
from sona.evaluation import EASE, ItemKNN, Pop, evaluate, temporal_split

K = 10


def fmt(name: str, m: dict[str, float], extra: str = "") -> str:
    return (
        f"| {name} | {m['ndcg']:.4f} | {m['recall']:.4f} | {m['precision']:.4f} | "
        f"{m['hit_rate']:.4f} | {m['coverage']:.4f} | {extra} |"
    )


HEADER = (
    "| model | NDCG@10 | Recall@10 | Precision@10 | HitRate@10 | Coverage | chosen on validation |\n"
    "|---|---|---|---|---|---|---|"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k")
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    catalog, events = sona.datasets.load_movielens(args.data)
    train, test = temporal_split(events, 0.2)
    tr, va = temporal_split(train, 0.2)
    print(f"train {len(train)}  test {len(test)}  (validation: {len(tr)} / {len(va)})")

    # --- tuning on validation (train only) -----------------------------------
    ease_val = {
        lam: evaluate(EASE(catalog, lam).fit(tr), va, K)["ndcg"]
        for lam in (50, 100, 200, 300, 500, 800, 1200)
    }
    lam = max(ease_val, key=ease_val.__getitem__)
    knn_val = {n: evaluate(ItemKNN(catalog, n).fit(tr), va, K)["ndcg"] for n in (20, 50, 100, 200, 400, 800)}
    nb = max(knn_val, key=knn_val.__getitem__)
    print("EASE val", ease_val, "→", lam)
    print("ItemKNN val", knn_val, "→", nb)
    base_cfg = sona.SonaConfig(progress=False, ease_lambda=float(lam), seed=0)
    t0 = time.perf_counter()
    val_engine = sona.Sona(catalog, base_cfg).fit(tr)
    fit_val_s = time.perf_counter() - t0
    grid = itertools.product((1.0, 2.0, 4.0, 6.0), (0.0, 0.2, 0.5), (0.0, 0.2))
    sona_val = {}
    for wt, wc, wg in grid:
        sona_val[(wt, wc, wg)] = evaluate(val_engine.reweighted(w_tower=wt, w_content=wc, w_genre=wg), va, K)[
            "ndcg"
        ]
    wt, wc, wg = max(sona_val, key=sona_val.__getitem__)
    print("sona val best", (wt, wc, wg), round(sona_val[(wt, wc, wg)], 4), f"(val fit {fit_val_s:.1f}s)")
    cfg = replace(base_cfg, w_tower=wt, w_content=wc, w_genre=wg)

    # --- test, once -----------------------------------------------------------
    rows = [
        fmt("Pop", evaluate(Pop(catalog).fit(train), test, K), "-"),
        fmt("ItemKNN", evaluate(ItemKNN(catalog, nb).fit(train), test, K), f"neighbors={nb}"),
    ]
    ease_test = evaluate(EASE(catalog, lam).fit(train), test, K)
    rows.append(fmt("EASE", ease_test, f"lambda={lam}"))
    t0 = time.perf_counter()
    engine = sona.Sona(catalog, cfg).fit(train)
    fit_s = time.perf_counter() - t0
    sona_test = evaluate(engine, test, K)
    rows.append(
        fmt("sona", sona_test, f"w_tower={wt}, w_content={wc}, w_genre={wg}, collab EASE lambda={lam}")
    )
    rows.append(
        fmt(
            "sona, tower only",
            evaluate(engine.reweighted(w_collaborative=0.0, w_content=0.0, w_genre=0.0), test, K),
            "ablation",
        )
    )
    rows.append(
        fmt(
            "sona, collaborative only",
            evaluate(engine.reweighted(w_tower=0.0, w_content=0.0, w_genre=0.0), test, K),
            "ablation",
        )
    )
    table = HEADER + "\n" + "\n".join(rows)
    rel = {m: sona_test[m] / ease_test[m] - 1 for m in ("ndcg", "recall")}
    summary = (
        f"sona vs EASE: NDCG@10 {rel['ndcg']:+.1%}, Recall@10 {rel['recall']:+.1%}. "
        f"sona fit on the 80% train part: {fit_s:.1f} s (torch threads for scoring: {args.threads})."
    )

    # --- new users ------------------------------------------------------------
    users = np.array(sorted(events["user_id"].unique()))
    rng = np.random.default_rng(0)
    new = set(rng.choice(users, size=len(users) // 5, replace=False))
    base = events[~events["user_id"].isin(new)]
    newev = events[events["user_id"].isin(new)].sort_values(["user_id", "timestamp"], kind="stable")
    pos = newev.groupby("user_id").cumcount()
    half = newev.groupby("user_id")["user_id"].transform("size") // 2
    first, second = newev[pos < half], newev[pos >= half]
    nu_rows = []
    for name, model in (
        ("Pop", Pop(catalog)),
        (f"EASE fold-in (lambda={lam})", EASE(catalog, lam)),
        ("sona (observe)", sona.Sona(catalog, cfg)),
    ):
        model.fit(base)
        model.observe(first)
        nu_rows.append(fmt(name, evaluate(model, second, K), ""))
    nu_table = HEADER.replace("chosen on validation", "note") + "\n" + "\n".join(nu_rows)
    nu_note = (
        f"{len(new)} new users (fixed seed 0), {len(first)} events observed, {len(second)} test events; "
        f"models fitted on the other {len(users) - len(new)} users' {len(base)} events."
    )
    out = (
        f"### Temporal 80/20, full ranking, K=10\n\n{table}\n\n{summary}\n\n"
        f"### New users via observe()\n\n{nu_note}\n\n{nu_table}"
    )
    print(out)
    if not args.no_record:
        append_section("Quality on MovieLens-100k (benchmarks/quality.py)", out, torch_threads=args.threads)


if __name__ == "__main__":
    main()
