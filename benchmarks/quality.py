"""Ranking quality per dataset: Pop, ItemKNN, EASE, SASRec, GRU4Rec and sona (base, + adapters).

Protocol: temporal per-user 80/20 split; full ranking over every unseen title
(no sampled negatives); K=10. Every hyperparameter is chosen on validation cut
from TRAIN only (the last 20% of each user's train events): EASE lambda,
ItemKNN neighbours, SASRec/GRU4Rec epochs (checkpoints every few epochs,
within a CPU-time budget), and sona's fusion weights (the sequential source
included) and adapter settings by :func:`sona.evaluation.tune` (its EASE
lambda is the EASE row's choice). Test figures are computed once, after
refitting on the whole train part with the chosen values.

sona is tuned once per dataset, on the train events of the users that are not
held out as new users (so neither table's choices saw a test event). Fit
seconds are wall time on the 80% train part; for "sona + adapters" they add
the adapter training for every test user.

Adapters, existing users: base vs adapters for the same users per activity
bucket (train events), with the paired standard error of the per-user NDCG@10
difference. New users: a fixed random 20% of users (seed 0) is left out of
fit; the first half of each one's history goes through ``observe`` (adapters
are trained from it), the second half is test. EASE folds them in (x_u @ B),
the sequential models read the observed sequence, Pop ranks by popularity.

Run: .venv/bin/python benchmarks/quality.py [--data DIR ...] [--validation-only]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _report import append_section, loadavg

import sona
from sona.evaluation import (
    ACTIVITY_BUCKETS,
    EASE,
    GRU4Rec,
    ItemKNN,
    Pop,
    SASRec,
    evaluate,
    paired_delta,
    per_user_metrics,
    ranking_metrics,
    temporal_split,
    tune,
)
from sona.lora import UserAdapterConfig, train_adapters

K = 10
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SEQ_DROPOUT = (0.2,)
SEQ_CHECK_EVERY = 5


def _new_user_split(events: pd.DataFrame) -> set[str]:
    users = np.array(sorted(events["user_id"].astype(str).unique()))
    return set(np.random.default_rng(0).choice(users, size=len(users) // 5, replace=False))


def _sequential_choice(
    make: Callable[..., SASRec | GRU4Rec], tr: pd.DataFrame, va: pd.DataFrame, max_epochs: int, budget: float
) -> tuple[dict[str, float], float, list[str]]:
    """Dropout and epochs on validation: one fit per dropout, NDCG@10 at every checkpoint."""
    best: tuple[float, dict[str, float]] = (-1.0, {})
    notes = []
    for dropout in SEQ_DROPOUT:
        model = make(dropout=dropout, epochs=max_epochs, max_seconds=budget)
        curve: dict[int, float] = {}

        def check(epoch: int, model: SASRec | GRU4Rec = model, curve: dict[int, float] = curve) -> None:
            if epoch % SEQ_CHECK_EVERY == 0:
                curve[epoch] = evaluate(model, va, K)["ndcg"]

        model.on_epoch = check
        model.fit(tr)
        if not curve:
            curve[model.epochs_run_] = evaluate(model, va, K)["ndcg"]
        ep = max(curve, key=curve.__getitem__)
        notes.append(f"dropout {dropout}: " + ", ".join(f"{e}:{v:.4f}" for e, v in curve.items()))
        if curve[ep] > best[0]:
            best = (curve[ep], {"dropout": dropout, "epochs": ep})
    return best[1], best[0], notes


def _metrics_row(name: str, m: dict[str, float], seconds: float, chosen: str) -> str:
    return (
        f"| {name} | {m['ndcg']:.4f} | {m['recall']:.4f} | {m['precision']:.4f} | {seconds:.1f} | {chosen} |"
    )


def _bucket_rows(
    engine: sona.Sona, users: list[str], before: pd.DataFrame, held: pd.DataFrame, kept: set[str]
) -> tuple[list[str], dict[str, tuple[float, float, float, float]]]:
    """Base vs adapters per activity bucket: rows and {bucket: (base, adapted, delta, se)}."""
    rel = held[["user_id", "content_id"]].astype(str)
    per = {}
    for use in (False, True):
        recs = engine.recommend_batch(users, k=K, exclude_watched=True, explore=False, use_adapter=use)
        per[use] = per_user_metrics(recs, rel, K).set_index("user_id")["ndcg"].reindex(users).fillna(0.0)
    n = before.groupby(before["user_id"].astype(str)).size().reindex(users).fillna(0).to_numpy()
    groups = [("all users", np.ones(len(users), bool))] + [
        (label, (n >= lo) & (n < hi)) for lo, hi, label in ACTIVITY_BUCKETS
    ]
    rows, stats = [], {}
    for label, m in groups:
        if m.sum() == 0:
            continue
        b, a = per[False].to_numpy()[m], per[True].to_numpy()[m]
        d, se = paired_delta(a, b)
        stats[label] = (float(b.mean()), float(a.mean()), d, se)
        n_ad = sum(1 for u, x in zip(users, m, strict=True) if x and u in kept)
        rows.append(
            f"| {label} | {int(m.sum())} | {n_ad} | {b.mean():.4f} | {a.mean():.4f} | "
            f"{a.mean() / max(b.mean(), 1e-12) - 1:+.1%} | {d:+.4f} ± {se:.4f} |"
        )
    return rows, stats


BUCKET_HEADER = (
    "| users | n | with adapter | NDCG@10 base | NDCG@10 + adapters | Δ | paired Δ ± SE |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
)
TABLE_HEADER = (
    "| model | NDCG@10 | Recall@10 | Precision@10 | fit s | chosen on validation |\n"
    "|---|---:|---:|---:|---:|---|"
)


def run(path: Path, args: argparse.Namespace) -> tuple[str, list[str]]:
    catalog, events = sona.datasets.load_movielens(path)
    name = path.name
    train, test = temporal_split(events, 0.2)
    tr, va = temporal_split(train, 0.2)
    new = _new_user_split(events)
    out = [
        f"### {name}: {events['user_id'].nunique()} users, {len(catalog)} titles, {len(events)} events",
        "",
        f"train {len(train)}, test {len(test)}; validation cut from train: {len(tr)} / {len(va)}.",
        "",
    ]
    log = print

    if args.choices is not None and args.choices.exists() and not args.validation_only:
        saved = json.loads(args.choices.read_text())[name]
        out += saved["lines"]
        lam, nb, seq = saved["lam"], saved["nb"], saved["seq"]
        val = {k: tuple(v) for k, v in saved["val"].items()}
        cfg = replace(sona.SonaConfig(), **saved["sona"])
        acfg = UserAdapterConfig(**saved["adapters"])
        log(f"{name}: choices read from {args.choices}", flush=True)
    else:
        lam, nb, seq, val, cfg, acfg = _choose(catalog, events, train, tr, va, new, args, out)
        if args.choices is not None:
            book = json.loads(args.choices.read_text()) if args.choices.exists() else {}
            book[name] = {
                "lam": lam, "nb": nb, "seq": seq, "val": val, "lines": out[4:],
                "sona": asdict(cfg), "adapters": {
                    "target_fraction": acfg.target_fraction, "shrinkage": acfg.shrinkage,
                    "min_interval_seconds": acfg.min_interval_seconds,
                },
            }  # fmt: skip
            args.choices.write_text(json.dumps(book, indent=1))
    if args.validation_only:
        return name, out
    return name, _test(catalog, events, train, test, new, lam, nb, seq, val, cfg, acfg, args, out)


def _choose(
    catalog: sona.Catalog,
    events: pd.DataFrame,
    train: pd.DataFrame,
    tr: pd.DataFrame,
    va: pd.DataFrame,
    new: set[str],
    args: argparse.Namespace,
    out: list[str],
) -> tuple[
    float, int, dict[str, dict[str, float]], dict[str, tuple[float, str]], sona.SonaConfig, UserAdapterConfig
]:
    """Every choice, on validation cut from train; appends the validation section to ``out``."""
    log, name = print, "choices"
    val: dict[str, tuple[float, str]] = {}
    ease_val = {lam: evaluate(EASE(catalog, lam).fit(tr), va, K)["ndcg"] for lam in (100, 400, 1500)}
    lam = max(ease_val, key=ease_val.__getitem__)
    val["EASE"] = (ease_val[lam], f"lambda={lam}")
    knn_val = {n: evaluate(ItemKNN(catalog, n).fit(tr), va, K)["ndcg"] for n in (50, 200, 800)}
    nb = max(knn_val, key=knn_val.__getitem__)
    val["ItemKNN"] = (knn_val[nb], f"neighbors={nb}")
    val["Pop"] = (evaluate(Pop(catalog).fit(tr), va, K)["ndcg"], "-")
    log(name, "EASE", ease_val, "KNN", knn_val, flush=True)
    seq: dict[str, dict[str, float]] = {}
    for label, cls in (("SASRec", SASRec), ("GRU4Rec", GRU4Rec)):

        def make(cls: type = cls, **kw: float) -> SASRec | GRU4Rec:
            return cls(catalog, batch_size=args.seq_batch, seed=0, **kw)

        t = time.perf_counter()
        chosen, v, notes = _sequential_choice(make, tr, va, args.seq_epochs, args.seq_budget)
        seq[label] = chosen
        val[label] = (v, f"dropout={chosen['dropout']}, epochs={chosen['epochs']}")
        log(name, label, notes, f"{time.perf_counter() - t:.0f}s", flush=True)
    t = time.perf_counter()
    base_cfg = sona.SonaConfig(progress=False, seed=0)
    tune_events = train[~train["user_id"].astype(str).isin(new)]
    tuned = tune(catalog, tune_events, base_cfg, lambdas=(float(lam),), tower_epochs=args.tower_epochs)
    tune_s = time.perf_counter() - t
    cfg = tuned.config
    acfg = tuned.adapter_config
    assert isinstance(acfg, UserAdapterConfig)
    trials = tuned.trials
    log(trials.sort_values("ndcg", ascending=False).head(8).to_string(), flush=True)
    fus = trials[trials["stage"] == "fusion"]
    ad = trials[trials["stage"] == "adapters"]
    val["sona base"] = (float(fus["ndcg"].max()), _sona_text(cfg))
    chosen_ad = ad[ad["params"] == f"target_fraction={acfg.target_fraction:g}, shrinkage={acfg.shrinkage:g}"]
    val["sona + adapters"] = (float(chosen_ad["ndcg"].iloc[0]), _adapter_text(acfg))
    out += [
        "#### Validation (train only; what every choice was made on)",
        "",
        "| model | NDCG@10 validation | chosen |",
        "|---|---:|---|",
        *(f"| {m} | {v:.4f} | {c} |" for m, (v, c) in val.items()),
        "",
        f"sona tuned on the train events of the {events['user_id'].nunique() - len(new)} users not held "
        f"out as new users ({len(tune_events)} events; their last 20% is the validation), "
        f"{len(trials)} candidates, "
        f"{tune_s:.0f} s. Adapter candidates (paired Δ NDCG@10 vs base ± SE, worst bucket in SEs):",
        "",
        *(
            f"- {r.params}: {r.ndcg:.4f} ({r.delta:+.4f} ± {r.se:.4f}, "
            f"worst bucket {r.worst_bucket_z:+.1f} SE)"
            for r in ad.itertuples()
        ),
        "",
    ]
    return lam, nb, seq, val, cfg, acfg


def _test(
    catalog: sona.Catalog,
    events: pd.DataFrame,
    train: pd.DataFrame,
    test: pd.DataFrame,
    new: set[str],
    lam: float,
    nb: int,
    seq: dict[str, dict[str, float]],
    val: dict[str, tuple[float, str]],
    cfg: sona.SonaConfig,
    acfg: UserAdapterConfig,
    args: argparse.Namespace,
    out: list[str],
) -> list[str]:
    """The test figures, once, with the choices made on validation."""
    log, started = print, time.perf_counter()
    rows, test_ndcg = [], {}

    def measure(label: str, model: object, fit_events: pd.DataFrame, chosen: str) -> object:
        t = time.perf_counter()
        model.fit(fit_events)  # type: ignore[attr-defined]
        secs = time.perf_counter() - t
        m = evaluate(model, test, K)  # type: ignore[arg-type]
        test_ndcg[label] = m["ndcg"]
        rows.append(_metrics_row(label, m, secs, chosen))
        log(rows[-1], flush=True)
        return model

    measure("Pop", Pop(catalog), train, "-")
    measure("ItemKNN", ItemKNN(catalog, nb), train, val["ItemKNN"][1])
    measure("EASE", EASE(catalog, lam), train, val["EASE"][1])
    for label, cls in (("SASRec", SASRec), ("GRU4Rec", GRU4Rec)):
        kw = seq[label]
        model = cls(
            catalog, batch_size=args.seq_batch, seed=0, dropout=kw["dropout"], epochs=int(kw["epochs"])
        )
        measure(label, model, train, val[label][1])
    t = time.perf_counter()
    engine = sona.Sona(catalog, cfg).fit(train)
    fit_s = time.perf_counter() - t
    m_base = evaluate(engine, test, K)
    rows.append(_metrics_row("sona base", m_base, fit_s, val["sona base"][1]))
    users = [str(u) for u in pd.unique(test["user_id"])]
    t = time.perf_counter()
    summary = train_adapters(engine, users, config=acfg)
    ad_s = time.perf_counter() - t
    m_ad = evaluate(engine, test, K)
    rows.append(_metrics_row("sona + adapters", m_ad, fit_s + ad_s, val["sona + adapters"][1]))
    test_ndcg["sona base"], test_ndcg["sona + adapters"] = m_base["ndcg"], m_ad["ndcg"]
    others = {k: v for k, v in test_ndcg.items() if not k.startswith("sona")}
    best_other = max(others, key=others.__getitem__)
    ratio = m_ad["ndcg"] / others[best_other]
    b_rows, b_stats = _bucket_rows(engine, users, train, test, set(summary.trained))
    worst = min((d / se for _, _, d, se in b_stats.values() if se > 0), default=0.0)
    out += [
        "#### Test: temporal 80/20, full ranking, K=10",
        "",
        TABLE_HEADER,
        *rows,
        "",
        f"sona + adapters / best other row ({best_other}): **{ratio:.3f}×** NDCG@10 (goal ≥ 1.10×). "
        f"Adapters: {len(summary.trained)} kept of {len(users)} test users, trained in {ad_s:.1f} s.",
        "",
        "#### Adapters on existing users (test), per activity bucket (train events)",
        "",
        BUCKET_HEADER,
        *b_rows,
        "",
        f"Worst bucket: {worst:+.2f} paired SE (goal: never below −1 SE).",
        "",
    ]

    # --- new users ---------------------------------------------------------------------------
    base_ev = events[~events["user_id"].astype(str).isin(new)]
    newev = events[events["user_id"].astype(str).isin(new)].sort_values(
        ["user_id", "timestamp"], kind="stable"
    )
    pos = newev.groupby("user_id").cumcount()
    half = newev.groupby("user_id")["user_id"].transform("size") // 2
    first, second = newev[pos < half], newev[pos >= half]
    nu_rows = []
    for label, model in (
        ("Pop", Pop(catalog)),
        ("EASE fold-in", EASE(catalog, lam)),
        ("SASRec", SASRec(catalog, batch_size=args.seq_batch, seed=0, **_int_epochs(seq["SASRec"]))),
    ):
        model.fit(base_ev)
        model.observe(first)
        m = evaluate(model, second, K)
        nu_rows.append(f"| {label} | {m['ndcg']:.4f} | {m['recall']:.4f} | {m['precision']:.4f} |")
        log(nu_rows[-1], flush=True)
    nu_engine = sona.Sona(catalog, cfg).fit(base_ev)
    nu_engine.observe(first)
    new_users = [str(u) for u in pd.unique(second["user_id"])]
    nu_summary = train_adapters(nu_engine, new_users, config=acfg)
    for use, label in ((False, "sona base (observe)"), (True, "sona + adapters (observe)")):
        recs = nu_engine.recommend_batch(new_users, k=K, exclude_watched=True, explore=False, use_adapter=use)
        m = ranking_metrics(recs, second[["user_id", "content_id"]], K, len(catalog))
        nu_rows.append(f"| {label} | {m['ndcg']:.4f} | {m['recall']:.4f} | {m['precision']:.4f} |")
    nb_rows, nb_stats = _bucket_rows(nu_engine, new_users, first, second, set(nu_summary.trained))
    lift = nb_stats["all users"][1] / nb_stats["all users"][0] - 1
    out += [
        "#### New users via observe()",
        "",
        f"{len(new)} new users (fixed seed 0) held out of fit; {len(first)} events observed "
        f"(first half of each history), {len(second)} test events; models fitted on the other users' "
        f"{len(base_ev)} events. "
        f"Adapters: {len(nu_summary.trained)} kept of {len(new_users)}.",
        "",
        "| model | NDCG@10 | Recall@10 | Precision@10 |",
        "|---|---:|---:|---:|",
        *nu_rows,
        "",
        "Per activity bucket (observed events):",
        "",
        BUCKET_HEADER,
        *nb_rows,
        "",
        f"New-user adapter lift: **{lift:+.1%}** NDCG@10 (goal ≥ +5%).",
        "",
        f"(test part took {time.perf_counter() - started:.0f} s.)",
        "",
    ]
    return out


def _int_epochs(kw: dict[str, float]) -> dict[str, float | int]:
    return {"dropout": kw["dropout"], "epochs": int(kw["epochs"])}


def _sona_text(cfg: sona.SonaConfig) -> str:
    return (
        f"ease_lambda={cfg.ease_lambda:g}, epochs={cfg.epochs}, w_tower={cfg.w_tower:g}, "
        f"w_content={cfg.w_content:g}, w_genre={cfg.w_genre:g}, w_popularity={cfg.w_popularity:g}"
    )


def _adapter_text(cfg: UserAdapterConfig) -> str:
    return f"target_fraction={cfg.target_fraction:g}, shrinkage={cfg.shrinkage:g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", type=Path, help="MovieLens directory (repeatable)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--validation-only", action="store_true", help="stop after the choices on validation")
    ap.add_argument("--seq-epochs", type=int, default=60, help="most epochs of SASRec/GRU4Rec")
    ap.add_argument(
        "--seq-budget", type=float, default=150.0, help="CPU seconds per SASRec/GRU4Rec tuning fit"
    )
    ap.add_argument("--seq-batch", type=int, default=128)
    ap.add_argument("--tower-epochs", type=int, nargs="+", default=None, help="tower epoch candidates")
    ap.add_argument(
        "--choices",
        type=Path,
        default=None,
        help="JSON file: a --validation-only run writes its choices there; a later run reads them "
        "(per dataset) and only measures the test figures",
    )
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = loadavg()
    paths = args.data or [DATASETS / "ml-100k", DATASETS / "ml-latest-small"]
    for path in paths:
        name, out = run(path, args)
        text = "\n".join(out)
        print(text, flush=True)
        if not args.no_record:
            kind = "validation only" if args.validation_only else "validation choices, test once"
            append_section(
                f"Quality on {name} (`benchmarks/quality.py`, {kind})",
                out,
                notes=[f"torch {torch.__version__}"],
                torch_threads=args.threads,
                load_at_start=load_at_start,
            )
        load_at_start = loadavg()


if __name__ == "__main__":
    main()
