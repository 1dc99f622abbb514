"""Sparse EASE fit time: this tree's ``sparse_ease_weights`` against an earlier revision's, side by side.

The item-item source is most of the fit above ``ease_dense_max_mb`` (10k-30k
titles), so its speed is measured alone here, on the matrix the engine builds
it from (binary users x titles; synthetic data, 5,000 users x 50 events, the
same events at every catalog size). The baseline is the module as it was at
``--baseline`` (read with ``git show``), so all run in one process, one BLAS
and one torch thread, interleaved round by round; the table gives medians and
ratios. This tree runs twice: as the engine calls it (each title keeps
``per_viewer`` regressors per viewer, at most 128), and with that cap lifted,
which must give the baseline's weights (same sparsity pattern, largest
difference relative to the largest weight: float32 round-off). Whether the
cap costs quality is ``benchmarks/catalog_scale.py``'s question.

Usage: ``nice -n 5 python benchmarks/item_item.py [--sizes 10000 30000] [--rounds 3]
[--baseline REV]`` (add ``--no-record`` to skip RESULTS.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import append_section, loadavg  # noqa: E402

from sona.datasets import SyntheticConfig, generate_synthetic  # noqa: E402
from sona.models import sparse_ease_weights  # noqa: E402

USERS, EVENTS_PER_USER, LAMBDA, NEIGHBORS = 5_000, 50.0, 300.0, 128
#: The last revision before the per-viewer cap of sparse EASE (7c9a6bf: before the gather/Cholesky rewrite).
BASELINE = "b54f508"
UNCAPPED = 10**9  # per_viewer that never binds: every title keeps its NEIGHBORS strongest regressors


def baseline_module(rev: str, tmp: Path) -> ModuleType:
    """``sona/models/_item_item.py`` as it was at ``rev``, imported under another name."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:sona/models/_item_item.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = tmp / "item_item_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("item_item_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def binary_matrix(n_items: int) -> sp.csr_matrix:
    catalog, events = generate_synthetic(
        SyntheticConfig(n_items=n_items, n_users=USERS, events_per_user=EVENTS_PER_USER, seed=0)
    )
    u = events["user_id"].astype("category").cat.codes.to_numpy()
    i = catalog.index_of(events["content_id"].to_numpy())
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(int(u.max()) + 1, n_items))
    x.data[:] = 1.0
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", default=BASELINE, help="git revision whose sparse EASE is the baseline")
    ap.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = loadavg()
    lines = [
        f"| titles | G nonzeros | {args.baseline} s | uncapped s | default s | speed-up (default) "
        "| weights: baseline | default | uncapped = baseline | max abs diff / max weight |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="item_item_") as tmp, threadpool_limits(1):
        old = baseline_module(args.baseline, Path(tmp))
        fits = {
            "old": lambda x: old.sparse_ease_weights(x, LAMBDA, neighbors=NEIGHBORS),
            "uncapped": lambda x: sparse_ease_weights(x, LAMBDA, neighbors=NEIGHBORS, per_viewer=UNCAPPED),
            "default": lambda x: sparse_ease_weights(x, LAMBDA, neighbors=NEIGHBORS),
        }
        for n in args.sizes:
            x = binary_matrix(n)
            times: dict[str, list[float]] = {name: [] for name in fits}
            out: dict[str, sp.csr_matrix] = {}
            for rnd in range(args.rounds):  # interleaved, so a change of load hits all alike
                for name, fit in fits.items():
                    t0 = time.perf_counter()
                    out[name] = fit(x)
                    times[name].append(time.perf_counter() - t0)
                print(
                    f"{n} titles round {rnd + 1}: "
                    + " ".join(f"{name} {times[name][-1]:.1f}s" for name in fits),
                    flush=True,
                )
            a, b = out["old"].tocsr(), out["uncapped"].tocsr()
            a.sort_indices()
            b.sort_indices()
            same = a.nnz == b.nnz and bool((a.indptr == b.indptr).all() and (a.indices == b.indices).all())
            diff = float(np.abs(a.data - b.data).max() / np.abs(a.data).max()) if same else float("nan")
            med = {name: float(np.median(t)) for name, t in times.items()}
            gram = (x.T @ x).nnz
            lines.append(
                f"| {n:,} | {gram:,} | {med['old']:.1f} | {med['uncapped']:.1f} | {med['default']:.1f} "
                f"| {med['old'] / med['default']:.2f}x | {a.nnz:,} | {out['default'].nnz:,} "
                f"| {'yes' if same else 'NO'} | {diff:.1e} |"
            )
            print(lines[-1], flush=True)
    notes = [
        f"synthetic: {USERS:,} users x {EVENTS_PER_USER:g} events (seed 0), binary users x titles, "
        f"lambda {LAMBDA:g}, {NEIGHBORS} neighbours; {args.rounds} rounds, interleaved, medians",
        f"baseline: sona/models/_item_item.py at {args.baseline}, loaded beside this tree's in one process",
        "default: this tree as the engine calls it (per_viewer 4, at least 16 and at most "
        f"{NEIGHBORS} regressors per title); uncapped: per_viewer={UNCAPPED:.0e}",
        "one BLAS thread and one torch thread; run under nice -n 5 on the shared machine",
    ]
    print("\n".join(lines))
    if not args.no_record:
        append_section(
            "Sparse EASE: gather and solve, side by side",
            lines,
            notes=notes,
            torch_threads=1,
            load_at_start=load0,
        )


if __name__ == "__main__":
    main()
