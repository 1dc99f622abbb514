"""Choose the engine's and the adapters' hyperparameters on validation cut from the training events.

One dataset's best fusion weights are not another's (ml-100k wants a strong
tower, a 9k-title catalog may not), and our results are checked on data we
never see, so nothing may be tuned by hand. :func:`tune` does it without a
human in the loop: it cuts the last ``validation_fraction`` of each user's
events off the events it is given (the caller passes *training* events only),
fits on the rest, and picks on full-ranking NDCG@k of the cut-off part.

Stages, each on the same split:

1. the collaborative source's L2 strength (EASE ``lambda``), by the EASE
   baseline alone (cheap, no engine fit);
2. for each tower candidate (training epochs) one engine fit, then the
   fusion weights by coordinate ascent over ``reweighted`` copies (no
   refit): each weight in turn takes its best value with the others fixed,
   until a round changes nothing (at most ``rounds`` rounds);
3. the adapters' settings, in the regime they are for: in production the
   base model is refit now and then and adapters learn what happened since,
   mostly from users it has never seen. So each candidate is measured twice:
   on *new users* (a seeded 20 % of the users held out of a second fit, the
   first half of their events folded in by ``observe`` and trained on, the
   second half scored) and on the existing users of the split above. Among
   the candidates that lose neither overall nor in any activity bucket by
   more than one paired standard error on existing users, the choice is the
   best new-user lift less its paired standard error (a lift that holds, not
   the luckiest draw; the library default when no candidate is safe).

Calibration is switched off for the tuning fits (it never changes a ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import numpy.typing as npt
import pandas as pd

from sona.catalog import Catalog
from sona.engine import Sona, SonaConfig
from sona.errors import ConfigError
from sona.evaluation._baselines import EASE
from sona.evaluation._metrics import evaluate, per_user_metrics
from sona.evaluation._split import temporal_split

__all__ = ["ACTIVITY_BUCKETS", "TuningResult", "paired_delta", "tune"]

#: Activity buckets (qualifying events before the evaluated part): lower bound, upper bound, label.
ACTIVITY_BUCKETS: tuple[tuple[int, int, str], ...] = (
    (0, 30, "<30"),
    (30, 100, "30–100"),
    (100, 10**9, "100+"),
)
_LAMBDAS = (50.0, 150.0, 400.0, 1000.0)
_WEIGHTS = {
    "w_tower": (1.0, 2.0, 4.0, 6.0),
    "w_content": (0.0, 0.2, 0.5),
    "w_genre": (0.0, 0.2),
    "w_popularity": (0.0, 0.3),
    "w_sequential": (0.0, 0.5, 1.0, 2.0),
}
#: Adapter candidates (``UserAdapterConfig`` fields changed from the default). A user's adapter
#: is early-stopped and accepted on a held-out tail of a few titles, a noisy judge: longer
#: patience and less trust in what it picks (a smaller shrinkage) are what moved new users.
_ADAPTERS: tuple[dict[str, object], ...] = (
    {"shrinkage": 0.1},
    {"steps": 150, "patience": 10},
    {"steps": 150, "patience": 10, "shrinkage": 0.1},
    {"steps": 150, "patience": 10, "shrinkage": 0.1, "temperature": 2.0},
)
#: Share of the users held out of the fit for the new-user validation of the adapters.
_NEW_USER_FRACTION = 0.2


@dataclass(frozen=True, slots=True)
class TuningResult:
    """What :func:`tune` chose, and every candidate it measured.

    Attributes
    ----------
    config
        The engine configuration to ``fit`` on all the training events.
    adapter_config
        The adapters' configuration (a ``sona.lora.UserAdapterConfig``), or None when not tuned.
    trials
        One row per candidate: ``stage``, ``params`` (text), ``ndcg`` on validation,
        and for adapters ``delta`` and ``se`` (paired, vs the base) and ``worst_bucket_z``.
    """

    config: SonaConfig
    adapter_config: object | None
    trials: pd.DataFrame = field(repr=False)


def paired_delta(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Mean of ``a - b`` over paired per-user values and its standard error."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2:
        return float(d.mean()) if len(d) else 0.0, float("inf")
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def _per_user(engine: Sona, users: list[str], held: pd.DataFrame, k: int, *, use_adapter: bool) -> pd.Series:
    recs = engine.recommend_batch(users, k=k, exclude_watched=True, explore=False, use_adapter=use_adapter)
    rel = held[["user_id", "content_id"]].astype(str)
    return per_user_metrics(recs, rel, k).set_index("user_id")["ndcg"].reindex(users).fillna(0.0)


def tune(
    catalog: Catalog,
    events: pd.DataFrame,
    config: SonaConfig | None = None,
    *,
    k: int = 10,
    validation_fraction: float = 0.2,
    lambdas: Sequence[float] = _LAMBDAS,
    tower_epochs: Sequence[int] | None = None,
    weights: dict[str, Sequence[float]] | None = None,
    adapters: bool = True,
    rounds: int = 3,
) -> TuningResult:
    """Pick ``ease_lambda``, the tower's epochs, the fusion weights and the adapters' settings on validation.

    Parameters
    ----------
    catalog, events
        The catalog and the *training* events (never the test part): the last
        ``validation_fraction`` of each user's events is held out from them.
    config
        Starting point (default ``SonaConfig()``); fields not tuned are kept.
    lambdas
        EASE L2 strengths to try.
    tower_epochs
        Training epochs of the base model to try (default: ``config.epochs`` only,
        one engine fit; each extra candidate costs one fit).
    weights
        Candidate values per fusion weight, ``{"w_tower": (...), ...}``, searched by
        coordinate ascent on one fitted engine (default: tower, content, genre,
        popularity and the sequential source).
    adapters
        Also choose the adapters' settings (needs ``sona.lora``; costs one more engine
        fit, without the held-out new users, and two adapter trainings per candidate).

    Returns
    -------
    TuningResult

    Raises
    ------
    ConfigError
        An unknown weight name or an empty candidate list.
    DataError
        ``events`` too small to split.
    """
    cfg = config or SonaConfig()
    grid = dict(_WEIGHTS if weights is None else weights)
    bad = sorted(n for n in grid if not n.startswith("w_") or not hasattr(cfg, n))
    if bad:
        raise ConfigError(f"tune() weights must name SonaConfig w_* fields, got {bad}")
    if not lambdas or (tower_epochs is not None and not tower_epochs):
        raise ConfigError("tune() needs at least one candidate per stage")
    fit, held = temporal_split(events, validation_fraction)
    trials: list[dict[str, object]] = []

    lam_scores = {
        float(lam): evaluate(EASE(catalog, float(lam)).fit(fit), held, k)["ndcg"] for lam in lambdas
    }
    trials += [{"stage": "ease_lambda", "params": f"{lam:g}", "ndcg": v} for lam, v in lam_scores.items()]
    lam = max(lam_scores, key=lam_scores.__getitem__)
    cfg = replace(cfg, ease_lambda=lam)

    best: tuple[float, SonaConfig, Sona] | None = None
    for epochs in tower_epochs or (cfg.epochs,):
        fit_cfg = replace(cfg, epochs=int(epochs), calibration="off", progress=False)
        engine = Sona(catalog, fit_cfg).fit(fit)
        start = {n: float(getattr(cfg, n)) for n in grid}
        top, current = _ascend(engine, grid, start, held, k, rounds, trials, f"epochs={epochs}")
        if best is None or top > best[0]:
            best = (top, replace(cfg, epochs=int(epochs), **current), engine.reweighted(**current))
    assert best is not None
    cfg, engine = best[1], best[2]

    adapter_cfg = None
    if adapters:
        adapter_cfg = _tune_adapters(catalog, engine, events, fit, held, k, trials)
    return TuningResult(config=cfg, adapter_config=adapter_cfg, trials=pd.DataFrame(trials))


def _ascend(
    engine: Sona,
    grid: dict[str, Sequence[float]],
    start: dict[str, float],
    held: pd.DataFrame,
    k: int,
    rounds: int,
    trials: list[dict[str, object]],
    label: str,
) -> tuple[float, dict[str, float]]:
    """Coordinate ascent of validation NDCG@k over the fusion weights of one fitted engine."""
    seen: dict[tuple[float, ...], float] = {}

    def score(w: dict[str, float]) -> float:
        key = tuple(w[n] for n in grid)
        if key not in seen:
            seen[key] = evaluate(engine.reweighted(**w), held, k)["ndcg"]
            trials.append({"stage": "fusion", "params": f"{label}, {_text(w)}", "ndcg": seen[key]})
        return seen[key]

    current = dict(start)
    top = score(current)
    for _ in range(rounds):
        changed = False
        for n in grid:
            for v in grid[n]:
                cand = {**current, n: float(v)}
                got = score(cand)
                if got > top:
                    top, current, changed = got, cand, True
        if not changed:
            break
    return top, current


def _text(w: dict[str, float]) -> str:
    return ", ".join(f"{n}={v:g}" for n, v in w.items())


def _split_new_users(events: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Users held out of fit, as adapters meet them in production (see ``tune``, stage 3).

    A seeded ``new_user_fraction`` of the users is left out; the first half of each
    one's events is what ``observe`` folds in (and adapters train on), the second
    half is scored. Returns ``(fit on, observed, scored)``.
    """
    users = np.array(sorted(events["user_id"].astype(str).unique()))
    n_new = max(2, int(len(users) * _NEW_USER_FRACTION))
    new = pd.Index(np.random.default_rng(seed).choice(users, size=n_new, replace=False))
    is_new = events["user_id"].astype(str).isin(new)
    ev = events[is_new].sort_values(["user_id", "timestamp"], kind="stable")
    pos = ev.groupby("user_id").cumcount()
    half = ev.groupby("user_id")["user_id"].transform("size") // 2
    return events[~is_new], ev[pos < half], ev[pos >= half]


@dataclass(frozen=True, slots=True)
class _Lift:
    """One adapter candidate on one validation: paired NDCG@k delta, its SE, the worst bucket in SEs."""

    ndcg: float
    delta: float
    se: float
    worst: float


def _lift(engine: Sona, held: pd.DataFrame, before: pd.DataFrame, k: int, config: object) -> _Lift:
    """Train ``config``'s adapters for the users of ``held`` and compare with the base, per bucket."""
    from sona.lora import train_adapters

    users = [str(u) for u in pd.unique(held["user_id"])]
    engine.detach()
    base = _per_user(engine, users, held, k, use_adapter=False).to_numpy()
    train_adapters(engine, users, config=config)  # type: ignore[arg-type]
    got = _per_user(engine, users, held, k, use_adapter=True).to_numpy()
    engine.detach()
    n = before.groupby(before["user_id"].astype(str)).size().reindex(users).fillna(0).to_numpy()
    delta, se = paired_delta(got, base)
    worst = min(
        (d / s if s > 0 else 0.0)
        for lo, hi, _ in ACTIVITY_BUCKETS
        if ((n >= lo) & (n < hi)).sum() >= 2
        for d, s in [paired_delta(got[(n >= lo) & (n < hi)], base[(n >= lo) & (n < hi)])]
    )
    return _Lift(float(got.mean()), delta, se, worst)


def _tune_adapters(
    catalog: Catalog,
    engine: Sona,
    events: pd.DataFrame,
    fit: pd.DataFrame,
    held: pd.DataFrame,
    k: int,
    trials: list[dict[str, object]],
) -> object:
    """Adapter settings: the best lift on new users that never hurts existing users (see ``tune``)."""
    from sona.lora import UserAdapterConfig

    default = UserAdapterConfig(min_interval_seconds=0)
    cands = [replace(default, **c) for c in _ADAPTERS]  # type: ignore[arg-type]
    cands = list(dict.fromkeys([default, *cands]))
    base_on, observed, scored = _split_new_users(events, engine.config.seed or 0)
    newcomer = Sona(catalog, replace(engine.config, calibration="off", progress=False)).fit(base_on)
    newcomer.observe(observed)
    existing: dict[object, _Lift] = {}
    new: dict[object, _Lift] = {}
    for cand in cands:
        existing[cand] = _lift(engine, held, fit, k, cand)
        new[cand] = _lift(newcomer, scored, observed, k, cand)
        for regime, got in (("adapters", existing[cand]), ("adapters, new users", new[cand])):
            trials.append(
                {
                    "stage": regime,
                    "params": _adapter_text(cand, default),
                    "ndcg": got.ndcg,
                    "delta": got.delta,
                    "se": got.se,
                    "worst_bucket_z": got.worst,
                }
            )

    def safe(c: object) -> bool:  # never worse than the base on existing users, overall or per bucket
        e = existing[c]
        return e.worst >= -1.0 and e.delta >= -e.se

    ok = [c for c in cands if safe(c)]
    if not ok:
        return default
    # the lift one can count on, not the luckiest: a few hundred users' mean moves by its SE
    return max(ok, key=lambda c: new[c].delta - new[c].se)


def _adapter_text(config: object, default: object) -> str:
    """The fields where ``config`` differs from ``default`` (``default`` when none)."""
    diff = [
        f"{f.name}={getattr(config, f.name)!r}"
        for f in fields(config)  # type: ignore[arg-type]
        if getattr(config, f.name) != getattr(default, f.name)
    ]
    return ", ".join(diff) or "default"
