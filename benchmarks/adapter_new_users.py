"""New-user adapter lift on validation, across new-user draws and adapter settings (issue 14).

Run: ``python benchmarks/adapter_new_users.py [--data DIR ...] [--draws 3]``. Prints one
table per dataset and appends them to benchmarks/RESULTS.md.

``quality.py`` reports the new-user lift once, on test, for one draw of 20 % of
the users: about 120–190 users, whose paired standard error (±2 %) is as large
as the effect. This script asks whether *any* adapter setting reaches the issue's
+5 % in that regime, without touching a test event: everything runs on the
train part of the temporal 80/20 split. The engine's fusion weights are chosen
by ``sona.tune`` on that train part (adapters not tuned). Then, for each draw
(seed), the protocol ``tune`` uses for adapters: a seeded 20 % of the users is
held out of a fit, the first half of each one's events goes through
``observe`` and trains the adapters, the second half is scored (full ranking,
NDCG@10, base vs adapters for the same users).

A second table runs the default adapters on the same draws with the sequential
source switched off (``reweighted(w_sequential=0)``, no refit): the drift the
adapters learn is largely what that source already ranks.

Nothing here selects anything: each row is one setting, measured on every draw.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _report import append_section, loadavg

import sona
from sona.evaluation import paired_delta, temporal_split, tune
from sona.evaluation._tuning import _per_user, _split_new_users
from sona.lora import UserAdapterConfig, train_adapters

K = 10
_WEIGHTS = ("w_tower", "w_content", "w_genre", "w_popularity", "w_sequential")  # what tune() chooses
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
_DEFAULT = UserAdapterConfig(min_interval_seconds=0)
#: (label, adapter config, train on the fused score): the library default, tune's candidates,
#: and one change from the default along each axis of the adapters' training.
VARIANTS: tuple[tuple[str, UserAdapterConfig, bool], ...] = (
    ("default", _DEFAULT, True),
    ("shrinkage=0.1", replace(_DEFAULT, shrinkage=0.1), True),
    ("shrinkage=0.5", replace(_DEFAULT, shrinkage=0.5), True),
    ("shrinkage=1.0 (unshrunk)", replace(_DEFAULT, shrinkage=1.0), True),
    ("steps=150, patience=10", replace(_DEFAULT, steps=150, patience=10), True),
    ("weight_decay=4", replace(_DEFAULT, weight_decay=4.0), True),
    ("lr=1e-3, shrinkage=0.5", replace(_DEFAULT, lr=1e-3, shrinkage=0.5), True),
    ("rank=16", replace(_DEFAULT, rank=16), True),
    ("cut_points=3", replace(_DEFAULT, cut_points=3), True),
    ("target_fraction=0.5", replace(_DEFAULT, target_fraction=0.5), True),
    ("holdout_fraction=0.2", replace(_DEFAULT, holdout_fraction=0.2), True),
    ("min_improvement=0.01", replace(_DEFAULT, min_improvement=0.01), True),
    ("temperature=2", replace(_DEFAULT, temperature=2.0), True),
    ('loss="bpr"', replace(_DEFAULT, loss="bpr"), True),
    ("tower-only objective (fused=False)", _DEFAULT, False),
)


@dataclass(frozen=True, slots=True)
class Cell:
    """One setting on one draw: mean NDCG@10 without and with adapters, paired SE, users kept."""

    base: float
    adapted: float
    se: float
    kept: int
    users: int

    @property
    def lift(self) -> float:
        return self.adapted / self.base - 1.0

    def text(self) -> str:
        return f"{self.lift:+.1%} ± {self.se / self.base:.1%} ({self.kept}/{self.users})"


def _cell(engine: sona.Sona, scored: pd.DataFrame, config: UserAdapterConfig, fused: bool) -> Cell:
    users = [str(u) for u in pd.unique(scored["user_id"])]
    engine.detach()
    base = _per_user(engine, users, scored, K, use_adapter=False).to_numpy()
    summary = train_adapters(engine, users, config=config, fused=fused)
    got = _per_user(engine, users, scored, K, use_adapter=True).to_numpy()
    engine.detach()
    _, se = paired_delta(got, base)
    return Cell(float(base.mean()), float(got.mean()), se, len(summary.trained), len(users))


def _row(label: str, cells: list[Cell]) -> str:
    mean = float(np.mean([c.lift for c in cells]))
    hits = sum(c.lift >= 0.05 for c in cells)
    return f"| {label} | " + " | ".join(c.text() for c in cells) + f" | {mean:+.1%} | {hits}/{len(cells)} |"


def run(path: Path, draws: int) -> tuple[list[str], str]:
    catalog, events = sona.datasets.load_movielens(path)[:2]
    train, _ = temporal_split(events, 0.2)  # the test part is never read
    t = time.perf_counter()
    chosen = tune(
        catalog, train, sona.SonaConfig(progress=False, seed=0), lambdas=(100.0, 400.0, 1500.0),
        adapters=False, rounds=2,
    ).config  # fmt: skip
    tune_s = time.perf_counter() - t
    cells: dict[str, list[Cell]] = {label: [] for label, _, _ in VARIANTS}
    no_seq: list[Cell] = []
    for seed in range(draws):
        base_on, observed, scored = _split_new_users(train, seed)
        engine = sona.Sona(catalog, replace(chosen, calibration="off")).fit(base_on)
        engine.observe(observed)
        for label, config, fused in VARIANTS:
            cells[label].append(_cell(engine, scored, config, fused))
            print(f"{path.name} draw {seed} {label}: {cells[label][-1].text()}", flush=True)
        without = {n: float(getattr(chosen, n)) for n in _WEIGHTS} | {"w_sequential": 0.0}
        no_seq.append(_cell(engine.reweighted(**without), scored, _DEFAULT, True))
    weights = ", ".join(f"{n}={getattr(chosen, n):g}" for n in ("ease_lambda", *_WEIGHTS))
    cols = " | ".join(f"draw {s}: lift ± SE (kept)" for s in range(draws))
    rule = "|---|" + "---:|" * (draws + 2)
    with_seq = cells["default"]
    lines = [
        f"### {path.name}: {events['user_id'].nunique()} users, {len(catalog)} titles; train part only",
        "",
        f"Engine chosen by `sona.tune` on the train part ({tune_s:.0f} s): {weights}.",
        "",
        f"| adapter setting | {cols} | mean lift | draws ≥ +5 % |",
        rule,
        *(_row(label, cs) for label, cs in cells.items()),
        "",
        "The same draws, default adapters, with and without the sequential source (one engine, "
        "`reweighted(w_sequential=0)`, no refit); new-user NDCG@10 base → with adapters:",
        "",
        f"| engine | {' | '.join(f'draw {s}' for s in range(draws))} | mean lift | draws ≥ +5 % |",
        rule,
        *(
            f"| {name} | "
            + " | ".join(f"{c.base:.4f} → {c.adapted:.4f} ({c.lift:+.1%})" for c in cs)
            + f" | {np.mean([c.lift for c in cs]):+.1%} | {sum(c.lift >= 0.05 for c in cs)}/{len(cs)} |"
            for name, cs in (
                (f"chosen (w_sequential={chosen.w_sequential:g})", with_seq),
                ("w_sequential=0", no_seq),
            )
        ),
    ]
    best = max(cells, key=lambda lb: float(np.mean([c.lift for c in cells[lb]])))
    return lines, f"{path.name}: best mean {np.mean([c.lift for c in cells[best]]):+.1%} ({best})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, nargs="+", default=[DATASETS / "ml-100k", DATASETS / "ml-latest-small"]
    )
    parser.add_argument("--draws", type=int, default=3, help="new-user draws (seeds 0..N-1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_at_start = loadavg()
    started = time.perf_counter()
    body, summary = [], []
    for path in args.data:
        lines, best = run(path, args.draws)
        body += [*lines, ""]
        summary.append(best)
    body.append(f"Best mean lift per dataset: {'; '.join(summary)} (goal ≥ +5 % on every dataset).")
    print("\n".join(body))
    append_section(
        "New-user adapter lift on validation, by setting and draw (adapter_new_users.py)",
        body,
        load_at_start=load_at_start,
        torch_threads=1,
        notes=[
            f"{time.perf_counter() - started:.0f} s; one torch thread",
            "train part of the temporal 80/20 split only; each draw holds out a seeded 20 % of its users, "
            "observes the first half of their events and scores the second half; lift = paired Δ NDCG@10 "
            "/ base, SE = its paired standard error / base",
        ],
    )


if __name__ == "__main__":
    main()
