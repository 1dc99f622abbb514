"""How fit, adapter training and batch scoring grow with events and titles (issue 17).

Every measurement runs in its own ``nice``d subprocess (so peak RSS is that
size's alone) on synthetic data from :func:`sona.datasets.generate_synthetic`:

- fit seconds and peak RSS at several event counts (users grow with events,
  ``--events-per-user`` fixed) and at several catalog sizes with the events
  fixed, for sona (base-model training reported apart from the whole fit),
  implicit's ALS (if installed) and dense EASE (up to ``--ease-max-items``);
- the fitted growth exponents: slope of log(seconds) on log(events) and on
  log(titles);
- ``train-adapters`` users/s in one process and as 2 concurrent shards;
- ``recommend_batch`` for every user against the floor: the tower's user
  embeddings times the item table plus an ``argpartition`` top-k, in numpy.

sona runs ``--epochs`` epochs (default 5, not the 40 of the default config) so
the whole script stays within minutes on a shared 2-core box; an epoch costs
the same whatever their number, so 40 epochs cost about 8x the base-model
seconds shown. Figures are from one run, side by side.

Run: nice .venv/bin/python benchmarks/scale.py [--events 250000,1000000,3000000]
     [--titles 5000,10000,30000] [--no-record]
     nice .venv/bin/python benchmarks/scale.py --step-cost 5000,20000,60000 --titles 5000,10000,30000
     (per-step cost of the base-model training alone, sizes interleaved: robust to a changing load)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- children
def _data(users: int, items: int, per_user: float, seed: int = 0):  # noqa: ANN202
    from sona.datasets import SyntheticConfig, generate_synthetic

    return generate_synthetic(
        SyntheticConfig(n_items=items, n_users=users, events_per_user=per_user, seed=seed)
    )


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_fit(args: argparse.Namespace) -> dict[str, object]:
    import torch

    torch.set_num_threads(1)
    import torch._dynamo  # noqa: F401  # the optimizer's one-off lazy import (seconds) is no fit cost

    catalog, events = _data(args.users, args.items, args.per_user)
    out: dict[str, object] = {"events": len(events), "users": args.users, "items": args.items}
    if args.model == "sona":
        import sona
        import sona.engine._fit as engine_module

        timed: dict[str, float] = {}
        train = engine_module.train_base_model

        def timed_train(*a, **k):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                return train(*a, **k)
            finally:
                timed["base"] = time.perf_counter() - t

        engine_module.train_base_model = timed_train
        cfg = sona.SonaConfig(epochs=args.epochs, progress=False, seed=0)
        t0 = time.perf_counter()
        engine = sona.Sona(catalog, cfg).fit(events)
        out["seconds"] = time.perf_counter() - t0
        out["base_seconds"] = timed["base"]
        out["peak_mb"] = _peak_mb()
        if args.recommend:
            out.update(_recommend_vs_floor(engine, args.recommend_rounds))
    elif args.model == "als":
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares

        t0 = time.perf_counter()
        u = events["user_id"].astype("category").cat.codes.to_numpy()
        i = catalog.index_of(events["content_id"].to_numpy())
        m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(u.max() + 1, len(catalog)))
        m.data[:] = 1.0
        AlternatingLeastSquares(factors=64, iterations=15, num_threads=1, random_state=0).fit(
            m, show_progress=False
        )
        out["seconds"] = time.perf_counter() - t0
        out["peak_mb"] = _peak_mb()
    elif args.model == "ease":
        from sona.evaluation import EASE

        t0 = time.perf_counter()
        EASE(catalog, 300.0).fit(events)
        out["seconds"] = time.perf_counter() - t0
        out["peak_mb"] = _peak_mb()
    return out


def _recommend_vs_floor(engine, rounds: int = 3) -> dict[str, float]:  # noqa: ANN001
    """Seconds of ``recommend_batch`` for every user, and of the bare numpy floor of its products.

    The floor does, with plain numpy/scipy over the same chunks and threads, the
    two products every ranking needs: the tower (user embeddings @ title table
    + bias, one GEMM) and the item-item source (interaction rows @ B), summed,
    then an argpartition top-10. It leaves out what ``recommend_batch`` adds:
    the other sources, per-user standardization, excluding watched titles,
    calibration and the result frame. The three run in ``rounds`` interleaved
    rounds (order reversed every other round; medians returned), so a change in
    the machine's load falls on all of them.
    """
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from threadpoolctl import threadpool_limits

    users = [str(u) for u in engine.users_]
    x = engine.tower_inputs(users).numpy()
    with torch.no_grad():
        emb = engine.scorer_.user_embedding(torch.from_numpy(x)).numpy()
    items = np.ascontiguousarray(engine.scorer_.item_embeddings.detach().numpy().T)
    bias = engine.scorer_.item_bias.detach().numpy()
    inter = engine.interactions(users).astype(np.float32)
    b = engine.model_.items.collab
    chunks = [(lo, min(lo + 1024, len(users))) for lo in range(0, len(users), 1024)]

    def floor(span: tuple[int, int]) -> None:
        lo, hi = span
        s = emb[lo:hi] @ items + bias
        c = inter[lo:hi] @ b
        s += c.toarray() if hasattr(c, "toarray") else c
        np.argpartition(-s, 10, axis=1)[:, :10]

    def tower_only(span: tuple[int, int]) -> None:  # the floor as first defined: the tower alone
        lo, hi = span
        np.argpartition(-(emb[lo:hi] @ items + bias), 10, axis=1)[:, :10]

    workers = engine.config.batch_workers or (os.cpu_count() or 1)

    def over_chunks(fn):  # noqa: ANN001, ANN202
        def run() -> None:  # one BLAS thread per chunk thread, as the engine runs
            with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
                list(pool.map(fn, chunks))

        return run

    runs = {
        "recommend_s": lambda: engine.recommend_batch(users, k=10, exclude_watched=True, explore=False),
        "floor_s": over_chunks(floor),
        "tower_floor_s": over_chunks(tower_only),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    return {**{name: statistics.median(v) for name, v in times.items()}, "recommend_rounds": rounds}


def child_adapters(args: argparse.Namespace) -> dict[str, object]:
    import torch

    import sona
    from sona.lora import DirectoryAdapterStore
    from sona_app.adapter_run import RunCheckpoint, Shard, run_adapter_training

    torch.set_num_threads(1)
    engine = sona.Sona.load(args.model_dir)
    users = Shard(args.shard, args.shards).owns([str(u) for u in engine.users_])
    store = DirectoryAdapterStore(Path(args.work) / "adapters")
    t0 = time.perf_counter()
    report = run_adapter_training(
        engine,
        users,
        checkpoint=RunCheckpoint(Path(args.work) / "runs", f"bench-{args.shard}-of-{args.shards}"),
        store=store,
        force=True,
        progress=False,
    )
    return {"users": len(users), "seconds": time.perf_counter() - t0, "failed": report.failed}


def child_prepare(args: argparse.Namespace) -> dict[str, object]:
    import torch

    import sona

    torch.set_num_threads(1)
    catalog, events = _data(args.users, args.items, args.per_user)
    sona.Sona(catalog, sona.SonaConfig(epochs=args.epochs, progress=False)).fit(events).save(args.model_dir)
    return {"users": args.users}


def step_cost(users_list: list[int], titles_list: list[int], rounds: int) -> str:
    """Base-model seconds per training step on random CSR inputs, sizes interleaved in rounds.

    One epoch per size through :func:`sona.models.train_base_model` (no pandas,
    no other fit stages); the sizes alternate, so a change in the machine's load
    hits all of them alike. Medians over ``rounds``.
    """
    import scipy.sparse as sp
    import torch
    import torch._dynamo  # noqa: F401

    from sona.models import BaseModelParams, train_base_model

    torch.set_num_threads(1)
    params = BaseModelParams(
        dim=64,
        hidden_dim=256,
        epochs=1,
        max_steps=None,
        batch_size=128,
        lr=3e-3,
        weight_decay=1e-4,
        input_dropout=0.3,
        cut_low=0.5,
        reconstruct_share=0.3,
        softmax_candidates=2048,
        seed=0,
        progress=False,
        threads=1,
    )

    def inputs(users: int, items: int, per: int = 50):  # noqa: ANN202
        rng = np.random.default_rng(0)
        rows = np.repeat(np.arange(users), per)
        w = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, rng.integers(0, items, len(rows)))), shape=(users, items)
        )
        w.sum_duplicates()
        o = w.copy()
        o.data = rng.random(len(o.data)).astype(np.float32)
        feats = sp.random(items, 26, density=0.1, format="csr", dtype=np.float32, random_state=0)
        return w, o, np.zeros((users, 5), np.float32), feats

    sizes = [(u, 5000) for u in users_list] + [(5000, t) for t in titles_list if t != 5000]
    data = {sz: inputs(*sz) for sz in sizes}
    per_step: dict[tuple[int, int], list[float]] = {sz: [] for sz in sizes}
    for _ in range(rounds):
        for sz in sizes:
            t0 = time.perf_counter()
            train_base_model(*data[sz], params)
            per_step[sz].append((time.perf_counter() - t0) / math.ceil(sz[0] / params.batch_size))
    med = {sz: float(np.median(v)) * 1000 for sz, v in per_step.items()}
    lines = [
        "### Base-model training cost per step (interleaved, median of rounds)",
        "",
        f"Random inputs, 50 titles per user, batch 128 users, {params.softmax_candidates} candidates, "
        f"{rounds} rounds. An epoch is users/128 steps, so constant ms/step = cost linear in users (events).",
        "",
        "| users | titles | events | ms/step | s/epoch |",
        "|---:|---:|---:|---:|---:|",
    ]
    for (u, t), ms in med.items():
        lines.append(f"| {u} | {t} | {u * 50} | {ms:.1f} | {ms * math.ceil(u / 128) / 1000:.1f} |")
    ev = [(u * 50, med[(u, 5000)] * math.ceil(u / 128)) for u in users_list]
    ti = [(t, med[(5000, t)]) for t in titles_list]
    lines.append(
        f"\nGrowth exponent of epoch seconds in events: {_slope(*map(list, zip(*ev, strict=True))):.2f}; "
        f"in titles (events fixed): {_slope(*map(list, zip(*ti, strict=True))):.2f}."
    )
    return "\n".join(lines)


# ----------------------------------------------------------------- parent
def _run(argv: list[str], timeout: float) -> dict[str, object] | None:
    cmd = ["nice", "-n", "5", sys.executable, str(Path(__file__).resolve()), "--child", *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"  timeout after {timeout:.0f} s: {' '.join(argv)}", flush=True)
        return None
    if proc.returncode != 0:
        print(f"  failed: {' '.join(argv)}\n{proc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return math.nan
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _cell(r: dict[str, object] | None, key: str = "seconds") -> str:
    return "n/a" if r is None or key not in r else f"{float(r[key]):.1f}"  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", default="250000,1000000,3000000")
    ap.add_argument("--titles", default="5000,10000,30000")
    ap.add_argument("--events-per-user", type=float, default=50.0)
    ap.add_argument("--title-events", type=int, default=250_000)
    ap.add_argument("--size-items", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--ease-max-items", type=int, default=10_000)
    ap.add_argument("--adapter-users", type=int, default=2000)
    ap.add_argument("--adapter-items", type=int, default=2000, help="titles of the adapter section's model")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument(
        "--step-cost",
        metavar="USERS",
        help="only the interleaved per-step measurement: users list (titles from --titles), e.g. 20000,60000",
    )
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from _report import append_section, loadavg

    load0 = loadavg()
    if args.step_cost:
        text = step_cost(
            [int(x) for x in args.step_cost.split(",")], [int(x) for x in args.titles.split(",")], args.rounds
        )
        print(text)
        if not args.no_record:
            append_section(
                "Scale: base-model step cost (benchmarks/scale.py --step-cost)",
                text,
                torch_threads=1,
                load_at_start=load0,
            )
        return
    try:
        import implicit  # noqa: F401

        models = ["sona", "als", "ease"]
    except ImportError:
        models = ["sona", "ease"]
        print("implicit is not installed: no ALS column", flush=True)
    epu = args.events_per_user

    def fit_row(events: int, items: int) -> dict[str, dict[str, object] | None]:
        users = max(int(events / epu), 1)
        row: dict[str, dict[str, object] | None] = {}
        for m in models:
            if m == "ease" and items > args.ease_max_items:
                row[m] = None
                continue
            argv = ["fit", "--model", m, "--users", str(users), "--items", str(items)]
            argv += ["--per-user", str(epu), "--epochs", str(args.epochs)]
            if m == "sona" and events == max(int(e) for e in args.events.split(",")):
                argv.append("--recommend")
            row[m] = _run(argv, args.timeout)
            print(f"  {events} events, {items} titles, {m}: {row[m]}", flush=True)
        return row

    lines = ["### Fit: growing events (titles fixed)", ""]
    lines.append(
        "| events | users | titles | sona fit s | sona base-model s | sona peak RSS MB | ALS s | ALS RSS MB "
        "| EASE s | EASE RSS MB |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ev_x, ev_fit, ev_base, ev_als = [], [], [], []
    rec = None
    for e in (int(x) for x in args.events.split(",")):
        row = fit_row(e, args.size_items)
        s = row["sona"]
        if s is not None:
            ev_x.append(float(s["events"]))  # type: ignore[arg-type]
            ev_fit.append(float(s["seconds"]))  # type: ignore[arg-type]
            ev_base.append(float(s["base_seconds"]))  # type: ignore[arg-type]
            if "recommend_s" in s:
                rec = s
        if row.get("als") is not None and s is not None:
            ev_als.append(float(row["als"]["seconds"]))  # type: ignore[index, arg-type]
        lines.append(
            f"| {e} | {int(e / epu)} | {args.size_items} | {_cell(s)} | {_cell(s, 'base_seconds')} "
            f"| {_cell(s, 'peak_mb')} | {_cell(row.get('als'))} | {_cell(row.get('als'), 'peak_mb')} "
            f"| {_cell(row.get('ease'))} | {_cell(row.get('ease'), 'peak_mb')} |"
        )
    lines += ["", "### Fit: growing titles (events fixed)", ""]
    lines.append(
        "| titles | events | sona fit s | sona base-model s | sona peak RSS MB | ALS s | EASE s "
        "| EASE RSS MB |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    ti_x, ti_fit, ti_base = [], [], []
    for n in (int(x) for x in args.titles.split(",") if x):
        row = fit_row(args.title_events, n)
        s = row["sona"]
        if s is not None:
            ti_x.append(float(n))
            ti_fit.append(float(s["seconds"]))  # type: ignore[arg-type]
            ti_base.append(float(s["base_seconds"]))  # type: ignore[arg-type]
        lines.append(
            f"| {n} | {args.title_events} | {_cell(s)} | {_cell(s, 'base_seconds')} | {_cell(s, 'peak_mb')} "
            f"| {_cell(row.get('als'))} | {_cell(row.get('ease'))} | {_cell(row.get('ease'), 'peak_mb')} |"
        )
    lines += [
        "",
        "### Growth exponents (slope of log seconds)",
        "",
        "| | in events (goal <= 1.1) | in titles (goal <= 0.4) |",
        "|---|---:|---:|",
        f"| sona base-model training | {_slope(ev_x, ev_base):.2f} | {_slope(ti_x, ti_base):.2f} |",
        f"| sona whole fit | {_slope(ev_x, ev_fit):.2f} | {_slope(ti_x, ti_fit):.2f} |",
    ]
    if len(ev_als) == len(ev_x):
        lines.append(f"| implicit ALS | {_slope(ev_x, ev_als):.2f} | |")
    if len(ti_base) >= 2:
        lines.append(
            f"\nTitles x{ti_x[1] / ti_x[0]:.0f} at fixed events: base-model training "
            f"x{ti_base[1] / ti_base[0]:.2f}, whole fit x{ti_fit[1] / ti_fit[0]:.2f} (goal <= 1.3)."
        )
    if rec is not None:
        rec_s, floor_s = float(rec["recommend_s"]), float(rec["floor_s"])  # type: ignore[arg-type]
        tower_s = float(rec["tower_floor_s"])  # type: ignore[arg-type]
        lines += [
            "",
            f"recommend_batch for all {rec['users']} users (k=10, watched excluded): {rec_s:.2f} s. "
            f"The issue's floor (numpy tower GEMM user_emb @ item_emb.T + bias, argpartition top-10, same "
            f"chunks and threads): {tower_s:.2f} s, floor / recommend_batch = {tower_s / rec_s:.2f} "
            f"(goal >= 0.8). With the interaction rows @ item-item B product every ranking also needs: "
            f"{floor_s:.2f} s, {floor_s / rec_s:.2f}. Medians of {rec.get('recommend_rounds', 1)} "
            f"interleaved rounds.",
        ]

    # ----------------------------------------------------------- adapters
    with tempfile.TemporaryDirectory() as work:
        model_dir = str(Path(work) / "model")
        prep = _run(
            [
                "prepare",
                "--users",
                str(args.adapter_users),
                "--items",
                str(args.adapter_items),
                "--per-user",
                str(epu),
                "--epochs",
                "2",
                "--model-dir",
                model_dir,
            ],
            args.timeout,
        )
        if prep is not None:
            one = _run(
                ["adapters", "--model-dir", model_dir, "--work", str(Path(work) / "one")], args.timeout
            )
            t0 = time.perf_counter()
            env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
            procs = [
                subprocess.Popen(
                    [
                        "nice",
                        "-n",
                        "5",
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--child",
                        "adapters",
                        "--model-dir",
                        model_dir,
                        "--work",
                        str(Path(work) / "two"),
                        "--shard",
                        str(i),
                        "--shards",
                        "2",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for i in range(2)
            ]
            outs = [p.communicate(timeout=args.timeout) for p in procs]
            two_wall = time.perf_counter() - t0
            shards = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs if o.strip()]
            n_two = sum(int(r["users"]) for r in shards)
            two_train = max((float(r["seconds"]) for r in shards), default=math.nan)
            lines += [
                "",
                "### train-adapters",
                "",
                "| run | users | training s | users/s |",
                "|---|---:|---:|---:|",
            ]
            if one is not None:
                lines.append(
                    f"| 1 process | {one['users']} | {float(one['seconds']):.1f} "
                    f"| {float(one['users']) / float(one['seconds']):.1f} |"
                )
            lines.append(
                f"| 2 shards as concurrent processes (slower shard) | {n_two} | {two_train:.1f} "
                f"| {n_two / two_train:.1f} |"
            )
            lines.append(f"\n2 shards: {two_wall:.1f} s wall including process start and engine load.")
    notes = [
        f"synthetic data, {epu:g} events per user; sona {args.epochs} epochs (default config otherwise; "
        "1 torch thread), implicit ALS 64 factors 15 iterations 1 thread, dense EASE lambda 300",
        f"load average at start {load0}",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        append_section(
            "Scale: fit, adapters and batch scoring (benchmarks/scale.py)",
            text,
            notes=notes,
            torch_threads=1,
            load_at_start=load0,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        cp = argparse.ArgumentParser()
        cp.add_argument("kind")
        cp.add_argument("--model", default="sona")
        cp.add_argument("--users", type=int, default=1000)
        cp.add_argument("--items", type=int, default=1000)
        cp.add_argument("--per-user", type=float, default=50.0)
        cp.add_argument("--epochs", type=int, default=5)
        cp.add_argument("--recommend", action="store_true")
        cp.add_argument("--recommend-rounds", type=int, default=3)
        cp.add_argument("--model-dir", default="")
        cp.add_argument("--work", default="")
        cp.add_argument("--shard", type=int, default=0)
        cp.add_argument("--shards", type=int, default=1)
        a = cp.parse_args(sys.argv[2:])
        fn = {"fit": child_fit, "adapters": child_adapters, "prepare": child_prepare}[a.kind]
        print(json.dumps(fn(a)))
    else:
        main()
