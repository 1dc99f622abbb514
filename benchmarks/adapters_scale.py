"""``train-adapters`` at a streaming service's size (issue 17): 100k viewers x 10k titles x 10M events.

One child fits the engine on the synthetic data with the *default* config (so
its seconds and peak RSS are what ``sona fit`` costs at this size) and saves
it. Then each run is a set of concurrent child processes, one per shard
(``Shard(i, n)``, the ``--shard I/N`` of the CLI), each loading the saved
engine and training the adapters of its share of the first ``users`` viewers
through :func:`sona_app.adapter_run.run_adapter_training` into a directory
store, as the ``train-adapters`` job does after loading. A run's rate is its
users over the wall time of its slowest shard's training (engine load
excluded; reported apart).

Run: nice .venv/bin/python benchmarks/adapters_scale.py
     [--users 100000 --items 10000 --per-user 100] [--runs 1x10000,2x10000,2x100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_prepare(a: argparse.Namespace) -> dict[str, object]:
    import torch

    import sona
    from sona.datasets import SyntheticConfig, generate_synthetic

    torch.set_num_threads(1)
    import torch._dynamo  # noqa: F401  # the optimizer's one-off lazy import is no fit cost

    catalog, events = generate_synthetic(
        SyntheticConfig(n_items=a.items, n_users=a.users, events_per_user=a.per_user, seed=0)
    )
    cfg = sona.SonaConfig(progress=False)
    t0 = time.perf_counter()
    engine = sona.Sona(catalog, cfg).fit(events)
    fit_s = time.perf_counter() - t0
    engine.save(a.model_dir)
    per_epoch = -(-len(engine.users_) // cfg.batch_size)  # every synthetic viewer is trainable
    epochs = cfg.epochs if cfg.max_steps is None else min(cfg.epochs, max(1, cfg.max_steps // per_epoch))
    return {"events": len(events), "fit_s": fit_s, "peak_mb": _peak_mb(), "epochs": epochs,
            "max_steps": cfg.max_steps}  # fmt: skip


def child_train(a: argparse.Namespace) -> dict[str, object]:
    import torch

    import sona
    from sona.lora import DirectoryAdapterStore
    from sona_app.adapter_run import RunCheckpoint, Shard, run_adapter_training

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    engine = sona.Sona.load(a.model_dir)
    load_s = time.perf_counter() - t0
    users = Shard(a.shard, a.shards).owns([str(u) for u in engine.users_][: a.limit])
    t1 = time.perf_counter()
    report = run_adapter_training(
        engine,
        users,
        checkpoint=RunCheckpoint(Path(a.work) / "runs", f"bench-{a.shard}-of-{a.shards}"),
        store=DirectoryAdapterStore(Path(a.work) / "adapters"),
        force=True,
        progress=False,
    )
    return {"users": len(users), "load_s": load_s, "train_s": time.perf_counter() - t1,
            "trained": report.trained, "rejected": report.rejected, "failed": report.failed,
            "peak_mb": _peak_mb()}  # fmt: skip


def _spawn(argv: list[str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--per-user", type=float, default=100.0)
    ap.add_argument("--runs", default="1x10000,2x10000,2x100000", help="SHARDSxUSERS, comma-separated")
    ap.add_argument("--model-dir", default="", help="reuse a saved engine instead of fitting one")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    from _report import append_section, loadavg

    load0 = loadavg()
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model_dir or str(Path(work) / "model")
        if not args.model_dir:
            prep = _result(
                _spawn(
                    f"prepare --users {args.users} --items {args.items} --per-user {args.per_user} "
                    f"--model-dir {model_dir}".split()
                ),
                args.timeout,
            )
            lines += [
                "### The engine: `Sona(catalog, SonaConfig()).fit(events)`, default config",
                "",
                "| events | users | titles | epochs (of 40; max_steps) | fit s | peak RSS MB |",
                "|---:|---:|---:|---|---:|---:|",
                f"| {prep['events']} | {args.users} | {args.items} | {prep['epochs']} ({prep['max_steps']}) "
                f"| {float(prep['fit_s']):.1f} | {float(prep['peak_mb']):.0f} |",
                "",
            ]
            print("\n".join(lines), flush=True)
        lines += [
            "### train-adapters (default UserAdapterConfig, directory store, 1 torch thread per process)",
            "",
            "| processes | users | training s (slowest shard) | users/s | trained | rejected | failed "
            "| engine load s | peak RSS MB per process |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for k, run in enumerate(args.runs.split(",")):
            shards, users = (int(x) for x in run.lower().split("x"))
            procs = [
                _spawn(
                    f"train --model-dir {model_dir} --work {Path(work) / f'run{k}'} "
                    f"--shard {i} --shards {shards} --limit {users}".split()
                )
                for i in range(shards)
            ]
            res = [_result(p, args.timeout) for p in procs]
            n = sum(int(r["users"]) for r in res)  # type: ignore[call-overload]
            slow = max(float(r["train_s"]) for r in res)  # type: ignore[arg-type]
            row = (
                f"| {shards} | {n} | {slow:.1f} | {n / slow:.1f} | {sum(int(r['trained']) for r in res)} "  # type: ignore[call-overload]
                f"| {sum(int(r['rejected']) for r in res)} | {sum(int(r['failed']) for r in res)} "  # type: ignore[call-overload]
                f"| {max(float(r['load_s']) for r in res):.1f} "  # type: ignore[arg-type]
                f"| {max(float(r['peak_mb']) for r in res):.0f} |"  # type: ignore[arg-type]
            )
            lines.append(row)
            print(row, flush=True)
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        append_section(
            "Scale: train-adapters at 100k viewers (benchmarks/adapters_scale.py)",
            text,
            notes=[
                f"synthetic data (sona.datasets.generate_synthetic), {args.per_user:g} events per viewer",
                f"load average at start {load0}",
            ],
            torch_threads=1,
            load_at_start=load0,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        cp = argparse.ArgumentParser()
        cp.add_argument("kind", choices=["prepare", "train"])
        cp.add_argument("--users", type=int, default=0)
        cp.add_argument("--items", type=int, default=0)
        cp.add_argument("--per-user", type=float, default=100.0)
        cp.add_argument("--model-dir", default="")
        cp.add_argument("--work", default="")
        cp.add_argument("--shard", type=int, default=0)
        cp.add_argument("--shards", type=int, default=1)
        cp.add_argument("--limit", type=int, default=None)
        a = cp.parse_args(sys.argv[2:])
        print(json.dumps({"prepare": child_prepare, "train": child_train}[a.kind](a)))
    else:
        main()
