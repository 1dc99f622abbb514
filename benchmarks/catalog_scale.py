"""Catalog scale: the collaborative source at 5k-100k titles (fit seconds, peak RSS, NDCG@10).

Synthetic data (``sona.datasets.generate_synthetic``) with the same users and
events budget at every catalog size, split temporally per user (80/20). Each
(size, model) runs in its own subprocess, so its peak RSS (``ru_maxrss``) is
its own; every child uses one BLAS thread (the machine is shared, and one
thread makes the fit times comparable). Models, on the binarized qualifying
events, as the engine builds them:

- ``ease``: dense EASE (float32, in-place Cholesky inverse), where its n² fits;
- ``sparse_ease``: each title's ridge regression on its strongest regressors, 4 per
  user who watched it, at least 16 and at most 128 (what ``SonaConfig(collaborative="auto")``
  uses above its 256 MB dense budget);
- ``itemknn``: cosine ItemKNN, 100 neighbours (the old fallback above 5,000 titles).

Quality is NDCG@10 / Recall@10 with full ranking over unseen titles, for a
fixed sample of test users (the same users for every model of one size).

Usage: ``nice -n 5 python benchmarks/catalog_scale.py [--sizes 5000 10000 30000 100000]
[--movielens ../shared/datasets/ml-100k ../shared/datasets/ml-latest-small]``
(add ``--no-record`` to skip RESULTS.md).
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
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _report import append_section, loadavg  # noqa: E402

from sona.datasets import DatasetWarning, SyntheticConfig, generate_synthetic, load_movielens  # noqa: E402
from sona.evaluation import ranking_metrics, temporal_split  # noqa: E402
from sona.features import engagement_weight  # noqa: E402
from sona.models import ease_weights, itemknn_weights, sparse_ease_weights  # noqa: E402

USERS, EVENTS_PER_USER, EVAL_USERS, LAMBDA, NEIGHBORS = 20_000, 25.0, 2_000, 300.0, 128
DENSE_MAX_ITEMS = 10_000  # dense EASE's float32 n² is 400 MB here; 30k would need 3.6 GB and ~15 min
ITEMKNN_MAX_ITEMS = 30_000  # the old fallback: at 100k, 49 blocks of 2048 x 100k dense similarities


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def prepare(source: str, path: Path) -> None:
    """Split and binarize one dataset into ``path`` (its own process: RSS stays out).

    ``source`` is a catalog size (synthetic data) or a MovieLens directory.
    """
    if source.isdigit():
        catalog, events = generate_synthetic(
            SyntheticConfig(n_items=int(source), n_users=USERS, events_per_user=EVENTS_PER_USER, seed=11)
        )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetWarning)
            catalog, events = load_movielens(source)
    n_items = len(catalog)
    train, test = temporal_split(events)
    users = pd.Index(sorted(train["user_id"].unique()))
    u = users.get_indexer(train["user_id"])
    i = catalog.index_of(train["content_id"].to_numpy())
    w = engagement_weight(train["completion_rate"], train["rating"], train["dismissed"])
    q = w > 0
    shape = (len(users), n_items)
    x = sp.csr_matrix((np.ones(int(q.sum()), np.float32), (u[q], i[q])), shape=shape)
    seen = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=shape)
    x.data[:], seen.data[:] = 1.0, 1.0
    sp.save_npz(path / "x.npz", x)
    sp.save_npz(path / "seen.npz", seen)
    np.savez(
        path / "test.npz",
        user=users.get_indexer(test["user_id"]),
        item=catalog.index_of(test["content_id"].to_numpy()),
    )


def child(label: str, model: str, path: Path) -> dict[str, float | str | int]:
    """Fit one model on the prepared data and score it; runs in its own process."""
    x, seen = sp.load_npz(path / "x.npz").tocsr(), sp.load_npz(path / "seen.npz").tocsr()
    n_items = x.shape[1]
    t = np.load(path / "test.npz")
    test = pd.DataFrame({"user_id": t["user"].astype(str), "content_id": t["item"].astype(str)})
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    if model == "ease":
        b: np.ndarray | sp.csr_matrix = ease_weights(x, LAMBDA)
    elif model == "sparse_ease":
        b = sparse_ease_weights(x, LAMBDA, neighbors=NEIGHBORS)
    else:
        b = itemknn_weights(x, neighbors=100)
    fit_s = time.perf_counter() - t0
    rss_fit = _rss_mb()
    rng = np.random.default_rng(0)
    test_rows = np.unique(t["user"])
    rows = np.sort(rng.choice(test_rows, size=min(EVAL_USERS, len(test_rows)), replace=False))
    frames = []
    for lo in range(0, len(rows), 250):  # bounded score blocks: 250 x n_items floats
        r = rows[lo : lo + 250]
        s = x[r] @ b
        s = np.asarray(s.toarray() if sp.issparse(s) else s, dtype=np.float32)
        s[seen[r].nonzero()] = -np.inf
        top = np.argpartition(-s, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        frames.append(
            pd.DataFrame(
                {
                    "user_id": np.repeat(r, 10).astype(str),
                    "rank": np.tile(np.arange(1, 11), len(r)),
                    "content_id": top.ravel().astype(str),
                }
            )
        )
    recs = pd.concat(frames, ignore_index=True)
    metrics = ranking_metrics(recs, test[test["user_id"].isin(rows.astype(str))], 10, n_items)
    return {
        "label": label,
        "n_items": n_items,
        "model": model,
        "fit_s": fit_s,
        "rss_before_mb": rss_before,
        "rss_peak_mb": rss_fit,
        "weights": int(b.nnz) if sp.issparse(b) else int(b.size),
        "ndcg": metrics["ndcg"],
        "recall": metrics["recall"],
        "n_train": int(x.nnz),
    }


def run(*args: str) -> dict[str, float | str | int]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5_000, 10_000, 30_000, 100_000])
    ap.add_argument(
        "--movielens", nargs="*", default=[], help="MovieLens directories to compare on too (real data)"
    )
    ap.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        source, model, path = args.child[0], args.child[1], Path(args.child[2])
        if model == "prepare":
            prepare(source, path)
            print(json.dumps({}))
        else:
            print(json.dumps(child(Path(source).name, model, path)))
        return
    load0 = loadavg()
    started = time.perf_counter()
    results = []
    for source in [*map(str, args.sizes), *args.movielens]:
        n = int(source) if source.isdigit() else 0  # MovieLens catalogs are small enough for dense EASE
        models = (["ease"] if n <= DENSE_MAX_ITEMS else []) + ["sparse_ease"]
        models += ["itemknn"] if n <= ITEMKNN_MAX_ITEMS else []
        with tempfile.TemporaryDirectory(prefix="catalog_scale_") as tmp:
            run(source, "prepare", tmp)
            for m in models:
                r = run(source, m, tmp)
                results.append(r)
                print(
                    f"{r['label']:>16} {m:<12} fit {r['fit_s']:7.1f}s  peak RSS {r['rss_peak_mb']:7.0f} MB "
                    f"(before fit {r['rss_before_mb']:.0f})  NDCG@10 {r['ndcg']:.4f}  "
                    f"Recall@10 {r['recall']:.4f}",
                    flush=True,
                )
    dense = {r["label"]: r for r in results if r["model"] == "ease"}
    lines = [
        "| data | titles | model | fit s | peak RSS MB | RSS before fit MB | weights | NDCG@10 "
        "| vs dense EASE | Recall@10 |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        d = dense.get(r["label"])
        ratio = f"{r['ndcg'] / d['ndcg']:.3f}" if d else "dense does not fit"
        data = "synthetic" if str(r["label"]).isdigit() else r["label"]
        lines.append(
            f"| {data} | {r['n_items']:,} | {r['model']} | {r['fit_s']:.1f} | {r['rss_peak_mb']:.0f} | "
            f"{r['rss_before_mb']:.0f} | {r['weights']:,} | {r['ndcg']:.4f} | {ratio} | {r['recall']:.4f} |"
        )
    print("\n".join(lines))
    print(f"total {time.perf_counter() - started:.0f}s")
    if not args.no_record:
        append_section(
            "Catalog scale: the collaborative source (dense EASE, sparse EASE, ItemKNN)",
            lines,
            notes=[
                f"synthetic, seed 11: {USERS:,} users x {EVENTS_PER_USER:g} events on average at every "
                "catalog size; temporal per-user 80/20 split; binarized qualifying events",
                f"EASE lambda {LAMBDA:g}; sparse EASE 4 regressors per viewer, 16-{NEIGHBORS} per title; "
                "ItemKNN 100 neighbours",
                f"NDCG@10 / Recall@10: full ranking over unseen titles for {EVAL_USERS:,} sampled test users",
                "each row in its own subprocess with one BLAS thread, reading the prepared binary matrix; "
                "peak RSS = ru_maxrss after the fit (includes that matrix: see 'RSS before fit')",
                f"dense EASE only up to {DENSE_MAX_ITEMS:,} titles (30k: 3.6 GB, ~15 min single-threaded); "
                f"ItemKNN only up to {ITEMKNN_MAX_ITEMS:,} (at 100k it had not finished after 7 min "
                "under load 13, so an earlier run was stopped)",
            ],
            load_at_start=load0,
        )


if __name__ == "__main__":
    main()
