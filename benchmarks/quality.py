"""Ranking quality per dataset: Pop, ItemKNN, EASE, SASRec, GRU4Rec and sona (base, + adapters).

Protocol: temporal per-user 80/20 split; full ranking over every unseen title
(no sampled negatives); K=10. Every hyperparameter is chosen on validation cut
from TRAIN only (the last 20% of each user's train events): EASE lambda,
ItemKNN neighbours, SASRec/GRU4Rec dropout and epochs (validation NDCG@10
after every epoch, each fit stopped once it has not improved for
``--seq-patience`` epochs, and not before ``--seq-min-epochs``), and sona's
fusion weights (the sequential source included) and adapter settings by :func:`sona.evaluation.tune` (its EASE
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

Run: ``.venv/bin/python benchmarks/quality.py --data DIR`` (every part in turn), or on a
busy shared machine one process per part, then assemble:
``--part classic|SASRec|GRU4Rec|sona`` (each saves its rows to --parts-dir) and
``--part assemble`` (prints the section and appends it to RESULTS.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import fields
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


def _new_user_split(events: pd.DataFrame) -> set[str]:
    users = np.array(sorted(events["user_id"].astype(str).unique()))
    return set(np.random.default_rng(0).choice(users, size=len(users) // 5, replace=False))


def _sequential_choice(
    make: Callable[..., SASRec | GRU4Rec], tr: pd.DataFrame, va: pd.DataFrame, args: argparse.Namespace
) -> tuple[dict[str, float], float, list[str], list[dict], SASRec | GRU4Rec]:
    """Dropout and epochs on validation: one fit per dropout, NDCG@10 after every epoch.

    Each fit runs until validation has not improved for ``args.seq_patience`` epochs (as RecBole's
    ``stopping_step``) and has run ``args.seq_min_epochs``: with a full softmax both models first
    learn popularity, then validation dips for a while before it rises (ml-latest-small: GRU4Rec's
    best of its first 11 epochs was epoch 1, SASRec dipped from epoch 5 to 8 and peaked at 49),
    so patience alone stops in the dip. The chosen epoch is a peak of the curve, not where a budget cut it;
    ``args.seq_epochs`` and ``args.seq_budget`` are safety caps, and a fit they end is flagged.
    Also returns the best fit with its best checkpoint's weights (RecBole's test model, no refit).
    """
    best: tuple[float, dict[str, float]] = (-1.0, {})
    notes, curves = [], []
    best_model: SASRec | GRU4Rec | None = None
    for dropout in args.seq_dropout:
        model = make(dropout=dropout, epochs=args.seq_epochs, max_seconds=args.seq_budget)
        curve: dict[int, float] = {}
        t = time.perf_counter()
        keep: dict = {}

        def check(
            epoch: int,
            model: SASRec | GRU4Rec = model,
            curve: dict[int, float] = curve,
            t0: float = t,
            keep: dict = keep,
        ) -> bool:
            curve[epoch] = evaluate(model, va, K)["ndcg"]
            if curve[epoch] > keep.get("v", -1.0):  # the first best epoch, as max() picks it below
                keep.update(v=curve[epoch], state=copy.deepcopy(model.net_.state_dict()))
                keep["seconds"] = time.perf_counter() - t0
            print(
                f"{type(model).__name__} dropout {model.dropout}: epoch {epoch} {curve[epoch]:.4f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            stale = epoch - max(curve, key=curve.__getitem__) >= args.seq_patience
            return stale and epoch >= args.seq_min_epochs

        model.on_epoch = check
        model.fit(tr)
        ep = max(curve, key=curve.__getitem__)
        peaked = model.stop_reason_ == "on_epoch"
        how = (
            f"peak at {ep}, stopped at {model.epochs_run_}"
            if peaked
            else f"NOT PEAKED: cut by {model.stop_reason_} at {model.epochs_run_}"
        )
        notes.append(f"dropout {dropout}: {how}; " + ", ".join(f"{e}:{v:.4f}" for e, v in curve.items()))
        curves.append(
            {"dropout": dropout, "curve": curve, "best_epoch": ep, "stop": model.stop_reason_,
             "seconds": time.perf_counter() - t, "seconds_to_best": keep["seconds"]}
        )  # fmt: skip
        if curve[ep] > best[0]:
            best = (curve[ep], {"dropout": dropout, "epochs": ep, "seconds_to_best": keep["seconds"]})
            model.net_.load_state_dict(keep["state"])
            best_model = model
    assert best_model is not None
    return best[1], best[0], notes, curves, best_model


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


def _data(path: Path) -> dict[str, object]:
    catalog, events = sona.datasets.load_movielens(path)
    train, test = temporal_split(events, 0.2)
    tr, va = temporal_split(train, 0.2)
    new = _new_user_split(events)
    base_ev = events[~events["user_id"].astype(str).isin(new)]
    newev = events[events["user_id"].astype(str).isin(new)].sort_values(
        ["user_id", "timestamp"], kind="stable"
    )
    pos = newev.groupby("user_id").cumcount()
    half = newev.groupby("user_id")["user_id"].transform("size") // 2
    return {
        "catalog": catalog, "events": events, "train": train, "test": test, "tr": tr, "va": va, "new": new,
        "base_ev": base_ev, "first": newev[pos < half], "second": newev[pos >= half],
    }  # fmt: skip


def _m(m: dict[str, float]) -> list[float]:
    return [m["ndcg"], m["recall"], m["precision"]]


def part_classic(d: dict, args: argparse.Namespace) -> dict:
    """Pop, ItemKNN, EASE: choices on validation, test once, new users."""
    catalog, tr, va, train, test = d["catalog"], d["tr"], d["va"], d["train"], d["test"]
    res: dict = {"val": {}, "test": {}, "new": {}}
    ease_val = {lam: evaluate(EASE(catalog, lam).fit(tr), va, K)["ndcg"] for lam in (100, 400, 1500)}
    lam = max(ease_val, key=ease_val.__getitem__)
    knn_val = {n: evaluate(ItemKNN(catalog, n).fit(tr), va, K)["ndcg"] for n in (50, 200, 800)}
    nb = max(knn_val, key=knn_val.__getitem__)
    res["val"]["Pop"] = (evaluate(Pop(catalog).fit(tr), va, K)["ndcg"], "-")
    res["val"]["ItemKNN"] = (knn_val[nb], f"neighbors={nb} of 50/200/800")
    res["val"]["EASE"] = (ease_val[lam], f"lambda={lam} of 100/400/1500")
    for label, model, chosen in (
        ("Pop", Pop(catalog), "-"),
        ("ItemKNN", ItemKNN(catalog, nb), res["val"]["ItemKNN"][1]),
        ("EASE", EASE(catalog, lam), res["val"]["EASE"][1]),
    ):
        t = time.perf_counter()
        model.fit(train)
        secs = time.perf_counter() - t
        res["test"][label] = [*_m(evaluate(model, test, K)), secs, chosen]
        print(label, res["test"][label], flush=True)
    for label, model in (("Pop", Pop(catalog)), ("EASE fold-in", EASE(catalog, lam))):
        model.fit(d["base_ev"])
        model.observe(d["first"])
        res["new"][label] = _m(evaluate(model, d["second"], K))
    return res


def part_sequential(d: dict, args: argparse.Namespace, label: str) -> dict:
    """SASRec or GRU4Rec: dropout and epochs on validation (early stopping), test once, new users."""
    cls = SASRec if label == "SASRec" else GRU4Rec
    catalog = d["catalog"]
    res: dict = {"val": {}, "test": {}, "new": {}}

    def make(**kw: float) -> SASRec | GRU4Rec:
        return cls(catalog, batch_size=args.seq_batch, seed=0, **kw)

    chosen, v, notes, curves, tuned = _sequential_choice(make, d["tr"], d["va"], args)
    grid = "/".join(f"{x:g}" for x in args.seq_dropout)
    text = (
        f"dropout={chosen['dropout']} of {grid}, epochs={chosen['epochs']} (batch {args.seq_batch}, patience "
        f"{args.seq_patience}, at least {args.seq_min_epochs} epochs; validation curves {'; '.join(notes)})"
    )
    res["val"][label] = (v, text)
    res["curves"] = {label: curves}
    # RecBole's protocol as a fallback row, saved before the refit: the best validation checkpoint
    # (trained on the fit part of train only) with the validation events observed as context
    tuned.observe(d["va"])
    res["test"][label] = [
        *_m(evaluate(tuned, d["test"], K)),
        chosen["seconds_to_best"],
        f"dropout={chosen['dropout']}, epochs={chosen['epochs']}; NO REFIT: best validation checkpoint "
        "(trained on the fit part of train, validation events observed)",
    ]
    res["test_no_refit"] = {label: res["test"][label]}
    print(label, "no refit", res["test"][label], flush=True)
    (args.parts_dir / f"{args.data.name}.{label}.json").write_text(json.dumps(res, indent=1))
    model = make(dropout=chosen["dropout"], epochs=int(chosen["epochs"]))
    t = time.perf_counter()
    model.fit(d["train"])
    secs = time.perf_counter() - t
    res["test"][label] = [
        *_m(evaluate(model, d["test"], K)),
        secs,
        f"dropout={chosen['dropout']}, epochs={chosen['epochs']}",
    ]
    print(label, res["test"][label], flush=True)
    if args.new_user_sequential:
        model = make(dropout=chosen["dropout"], epochs=int(chosen["epochs"]))
        model.fit(d["base_ev"])
        model.observe(d["first"])
        res["new"][label] = _m(evaluate(model, d["second"], K))
    return res


def part_sona(d: dict, args: argparse.Namespace) -> dict:
    """sona base and + adapters: tune() on validation, test once, per-bucket adapter effect, new users."""
    catalog, train, test, new = d["catalog"], d["train"], d["test"], d["new"]
    res: dict = {"val": {}, "test": {}, "new": {}, "lines": {}}
    t = time.perf_counter()
    tune_events = train[~train["user_id"].astype(str).isin(new)]
    lambdas = tuple(args.lam) if args.lam else (100.0, 400.0, 1500.0)
    tuned = tune(
        catalog, tune_events, sona.SonaConfig(progress=False, seed=0), lambdas=lambdas,
        tower_epochs=args.tower_epochs, rounds=2,
    )  # fmt: skip
    tune_s = time.perf_counter() - t
    cfg, acfg = tuned.config, tuned.adapter_config
    assert isinstance(acfg, UserAdapterConfig)
    trials = tuned.trials
    fus, ad = trials[trials["stage"] == "fusion"], trials[trials["stage"] == "adapters"]
    adn = trials[trials["stage"] == "adapters, new users"]
    res["val"]["sona base"] = (float(fus["ndcg"].max()), _sona_text(cfg))
    pick = ad[ad["params"] == _adapter_text(acfg)]
    res["val"]["sona + adapters"] = (float(pick["ndcg"].iloc[0]), _adapter_text(acfg))

    def cand(r: object) -> str:
        return (
            f"{r.ndcg:.4f} ({r.delta:+.4f} ± {r.se:.4f}, {r.delta / max(r.ndcg - r.delta, 1e-12):+.1%}, "  # type: ignore[attr-defined]
            f"worst bucket {r.worst_bucket_z:+.1f} SE)"  # type: ignore[attr-defined]
        )

    new_by = {r.params: r for r in adn.itertuples()}
    res["lines"]["tune"] = [
        f"sona tuned by `sona.tune` on the train events of the users not held out as new users "
        f"({len(tune_events)} events; their last 20% is the validation): {len(fus)} fusion candidates by "
        f"coordinate ascent, ease_lambda from {lambdas}, {tune_s:.0f} s. Adapter candidates, each on "
        "existing users (that validation) and on new users (20% of these users held out of a fit, "
        "first half of their events observed, second half scored); paired Δ NDCG@10 vs base ± SE, "
        "worst bucket in SEs. Chosen: the best new-user Δ − SE among those never below −1 SE on "
        f"existing users, overall or per bucket → **{_adapter_text(acfg)}**:",
        "",
        *(
            f"- {r.params}: existing {cand(r)}; new "
            + (cand(new_by[r.params]) if r.params in new_by else "-")
            for r in ad.itertuples()
        ),
    ]
    print("\n".join(res["lines"]["tune"]), res["val"], flush=True)
    t = time.perf_counter()
    engine = sona.Sona(catalog, cfg).fit(train)
    fit_s = time.perf_counter() - t
    res["test"]["sona base"] = [*_m(evaluate(engine, test, K)), fit_s, res["val"]["sona base"][1]]
    users = [str(u) for u in pd.unique(test["user_id"])]
    t = time.perf_counter()
    summary = train_adapters(engine, users, config=acfg)
    ad_s = time.perf_counter() - t
    res["test"]["sona + adapters"] = [
        *_m(evaluate(engine, test, K)),
        fit_s + ad_s,
        res["val"]["sona + adapters"][1],
    ]
    print(res["test"], flush=True)
    rows, stats = _bucket_rows(engine, users, train, test, set(summary.trained))
    worst = min((dd / se for _, _, dd, se in stats.values() if se > 0), default=0.0)
    res["lines"]["buckets"] = [
        f"Adapters: {len(summary.trained)} kept of {len(users)} test users, trained in {ad_s:.1f} s.",
        "",
        BUCKET_HEADER,
        *rows,
        "",
        f"Worst bucket: {worst:+.2f} paired SE (goal: never below −1 SE).",
    ]
    nu = sona.Sona(catalog, cfg).fit(d["base_ev"])
    nu.observe(d["first"])
    second = d["second"]
    new_users = [str(u) for u in pd.unique(second["user_id"])]
    nu_summary = train_adapters(nu, new_users, config=acfg)
    rel = second[["user_id", "content_id"]]
    for use, label in ((False, "sona base (observe)"), (True, "sona + adapters (observe)")):
        recs = nu.recommend_batch(new_users, k=K, exclude_watched=True, explore=False, use_adapter=use)
        res["new"][label] = _m(ranking_metrics(recs, rel, K, len(catalog)))
    nrows, nstats = _bucket_rows(nu, new_users, d["first"], second, set(nu_summary.trained))
    lift = nstats["all users"][1] / nstats["all users"][0] - 1
    res["lines"]["new_buckets"] = [
        f"Adapters: {len(nu_summary.trained)} kept of {len(new_users)} new users. Per activity bucket "
        "(observed events):",
        "",
        BUCKET_HEADER,
        *nrows,
        "",
        f"New-user adapter lift: **{lift:+.1%}** NDCG@10 (goal ≥ +5%).",
    ]
    print("\n".join(res["lines"]["buckets"] + res["lines"]["new_buckets"]), flush=True)
    return res


def assemble(d: dict, name: str, parts: list[dict]) -> list[str]:
    """One section per dataset from the parts' results."""
    val, test, new, lines = {}, {}, {}, {}
    for p in parts:
        val.update(p["val"])
        test.update(p["test"])
        new.update(p["new"])
        lines.update(p.get("lines", {}))
    events, catalog = d["events"], d["catalog"]
    order = ["Pop", "ItemKNN", "EASE", "SASRec", "GRU4Rec", "sona base", "sona + adapters"]
    others = {k: v[0] for k, v in test.items() if not k.startswith("sona")}
    best = max(others, key=others.__getitem__) if others else None
    ratio = test["sona + adapters"][0] / others[best] if best and "sona + adapters" in test else float("nan")
    out = [
        f"### {name}: {events['user_id'].nunique()} users, {len(catalog)} titles, {len(events)} events",
        "",
        f"train {len(d['train'])}, test {len(d['test'])}; validation cut from train: "
        f"{len(d['tr'])} / {len(d['va'])}.",
        "",
        "#### Validation (train only; what every choice was made on)",
        "",
        "| model | NDCG@10 validation | chosen |",
        "|---|---:|---|",
        *(f"| {m} | {val[m][0]:.4f} | {val[m][1]} |" for m in order if m in val),
        "",
        *lines.get("tune", []),
        "",
        "#### Test: temporal 80/20, full ranking, K=10",
        "",
        TABLE_HEADER,
        *(
            _metrics_row(
                m,
                dict(zip(("ndcg", "recall", "precision"), test[m][:3], strict=True)),
                test[m][3],
                test[m][4],
            )
            for m in order
            if m in test
        ),
        "",
        f"sona + adapters / best other row ({best}): **{ratio:.3f}×** NDCG@10 (goal ≥ 1.10×).",
        "",
        "#### Adapters on existing users (test), per activity bucket (train events)",
        "",
        *lines.get("buckets", []),
        "",
        "#### New users via observe()",
        "",
        f"{len(d['new'])} new users (fixed seed 0) held out of fit; {len(d['first'])} events observed (first "
        f"half of each history), {len(d['second'])} test events; models fitted on the other users' "
        f"{len(d['base_ev'])} events.",
        "",
        "| model | NDCG@10 | Recall@10 | Precision@10 |",
        "|---|---:|---:|---:|",
        *(f"| {m} | {v[0]:.4f} | {v[1]:.4f} | {v[2]:.4f} |" for m, v in new.items()),
        "",
        *lines.get("new_buckets", []),
        "",
    ]
    return out


def _sona_text(cfg: sona.SonaConfig) -> str:
    return (
        f"ease_lambda={cfg.ease_lambda:g}, epochs={cfg.epochs}, w_tower={cfg.w_tower:g}, "
        f"w_content={cfg.w_content:g}, w_genre={cfg.w_genre:g}, w_popularity={cfg.w_popularity:g}, "
        f"w_sequential={cfg.w_sequential:g}"
    )


def _adapter_text(cfg: UserAdapterConfig) -> str:
    """The fields that differ from the library default, as ``sona.tune`` names its candidates."""
    default = UserAdapterConfig(min_interval_seconds=0)
    diff = [
        f"{f.name}={getattr(cfg, f.name)!r}"
        for f in fields(cfg)
        if getattr(cfg, f.name) != getattr(default, f.name)
    ]
    return ", ".join(diff) or "default"


PARTS = ("classic", "SASRec", "GRU4Rec", "sona")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATASETS / "ml-100k", help="MovieLens directory")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument(
        "--part",
        choices=(*PARTS, "all", "assemble"),
        default="all",
        help="run one group of rows and save it to --parts-dir (parallel processes on a shared "
        "machine), or assemble the saved parts into the section; 'all' runs every part in turn",
    )
    ap.add_argument("--parts-dir", type=Path, default=Path("/tmp/sona-quality-parts"))
    ap.add_argument(
        "--seq-epochs",
        type=int,
        default=300,
        help="cap on SASRec/GRU4Rec epochs (safety; flagged if reached)",
    )
    ap.add_argument(
        "--seq-patience",
        type=int,
        default=10,
        help="SASRec/GRU4Rec tuning fits stop after this many epochs without a better validation NDCG@10",
    )
    ap.add_argument(
        "--seq-min-epochs",
        type=int,
        default=50,
        help="SASRec/GRU4Rec tuning fits run at least this many epochs (past the early dip of the curve)",
    )
    ap.add_argument(
        "--seq-budget",
        type=float,
        default=None,
        help="optional cap in CPU seconds per SASRec/GRU4Rec tuning fit (safety; flagged if reached)",
    )
    ap.add_argument("--seq-dropout", type=float, nargs="+", default=[0.2, 0.5], help="dropout candidates")
    ap.add_argument(
        "--seq-batch",
        type=int,
        default=32,
        help="training windows per step: each holds up to 50 targets, so 32 is ~1,600 targets per step, "
        "near RecBole's 2,048 (128 windows gave ~10 steps per epoch on 610 users)",
    )
    ap.add_argument("--new-user-sequential", action="store_true", help="also SASRec/GRU4Rec on new users")
    ap.add_argument(
        "--lam", type=float, nargs="+", default=None, help="ease_lambda candidates of sona's tune"
    )
    ap.add_argument("--tower-epochs", type=int, nargs="+", default=None, help="tower epoch candidates")
    ap.add_argument("--note", action="append", default=[], help="a note for the recorded section")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_at_start = loadavg()
    d = _data(args.data)
    name = args.data.name
    args.parts_dir.mkdir(parents=True, exist_ok=True)
    todo = PARTS if args.part == "all" else (() if args.part == "assemble" else (args.part,))
    for part in todo:
        t = time.perf_counter()
        if part == "classic":
            res = part_classic(d, args)
        elif part == "sona":
            res = part_sona(d, args)
        else:
            res = part_sequential(d, args, part)
        res["seconds"] = time.perf_counter() - t
        (args.parts_dir / f"{name}.{part}.json").write_text(json.dumps(res, indent=1))
    if args.part not in ("all", "assemble"):
        return
    parts = [json.loads(p.read_text()) for p in sorted(args.parts_dir.glob(f"{name}.*.json"))]
    out = assemble(d, name, parts)
    print("\n".join(out), flush=True)
    if not args.no_record:
        append_section(
            f"Quality on {name} (`benchmarks/quality.py`)",
            out,
            notes=[
                f"torch {torch.__version__}",
                "parts run as parallel processes (--part), then --part assemble; choices on validation, "
                "test figures once",
                *args.note,
            ],
            torch_threads=args.threads,
            load_at_start=load_at_start,
        )


if __name__ == "__main__":
    main()
