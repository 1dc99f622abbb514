"""Paired before/after ranking quality of two sona source trees on one dataset (issue 17).

Each tree (e.g. ``git archive <commit> sona | tar -x -C /tmp/before``) is fitted
in its own subprocess with the default config on the public temporal 80/20
split (full ranking, K=10, watched titles excluded) and scored per user; the
table gives each side's NDCG@10 with its standard error and the paired
per-user difference with its standard error, for the fused ranking and the
tower alone. The dataset is read once by the current tree and handed to both
sides as a pickle, so both see identical events.

Run: .venv/bin/python benchmarks/quality_ab.py BEFORE_ROOT AFTER_ROOT --data ../shared/datasets/ml-100k
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_CHILD = """
import json, pickle, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(1)
import sona
from sona.evaluation import temporal_split
from sona.evaluation._metrics import per_user_metrics
catalog, events = pickle.load(open(sys.argv[2], "rb"))
train, test = temporal_split(events, 0.2)
t0 = time.perf_counter()
eng = sona.Sona(catalog, sona.SonaConfig(progress=False, seed=0)).fit(train)
out = {"fit_s": time.perf_counter() - t0}
hist = eng.history_[["user_id", "content_id"]].drop_duplicates()
rel = test[["user_id", "content_id"]].merge(hist, on=["user_id", "content_id"], how="left", indicator=True)
rel = rel[rel["_merge"] == "left_only"][["user_id", "content_id"]]
users = list(test["user_id"].unique())
tower = {"w_collaborative": 0.0, "w_content": 0.0, "w_genre": 0.0}
for name, e in (("sona", eng), ("tower", eng.reweighted(**tower))):
    recs = e.recommend_batch(users, k=10, exclude_watched=True, explore=False)
    pu = per_user_metrics(recs, rel, 10)
    out[name] = dict(zip(pu.user_id.astype(str), pu.ndcg.astype(float)))
print(json.dumps(out))
"""


def _side(root: str, data: Path) -> dict[str, object]:
    proc = subprocess.run(
        ["nice", "-n", "5", sys.executable, "-c", _CHILD, root, str(data)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--data", required=True)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    from _report import append_section, loadavg

    import sona

    load0 = loadavg()
    catalog, events = sona.datasets.load_movielens(args.data)
    events["rating"] = events["rating"].clip(lower=1.0)  # older trees accept ratings in [1, 5] only
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.pkl"
        data.write_bytes(pickle.dumps((catalog, events)))
        before, after = _side(args.before, data), _side(args.after, data)
    rows = ["| ranking | before NDCG@10 | after NDCG@10 | paired after - before |", "|---|---:|---:|---:|"]
    for name in ("sona", "tower"):
        b, a = before[name], after[name]
        users = sorted(set(b) & set(a))  # type: ignore[arg-type]
        vb = np.array([b[u] for u in users])  # type: ignore[index]
        va = np.array([a[u] for u in users])  # type: ignore[index]
        d = va - vb
        se = lambda x: x.std(ddof=1) / np.sqrt(len(x))  # noqa: E731
        rows.append(
            f"| {name} | {vb.mean():.4f} ± {se(vb):.4f} | {va.mean():.4f} ± {se(va):.4f} "
            f"| {d.mean():+.4f} ± {se(d):.4f} (n={len(d)}) |"
        )
    rows.append(
        f"\nfit seconds (default config, same load): before {before['fit_s']:.1f}, after {after['fit_s']:.1f}"
    )
    text = "\n".join(rows)
    print(text)
    if not args.no_record:
        append_section(
            f"Quality before/after (benchmarks/quality_ab.py, {Path(args.data).name})",
            text,
            notes=[f"before: {args.before}, after: {args.after}", f"load average at start {load0}"],
            torch_threads=1,
            load_at_start=load0,
        )


if __name__ == "__main__":
    main()
