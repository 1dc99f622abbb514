"""SonaConfig: every hyperparameter of the engine, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from sona.errors import ConfigError

__all__ = ["CalibrationKind", "CollaborativeKind", "SonaConfig"]

CollaborativeKind = Literal["auto", "ease", "sparse_ease", "itemknn"]
CalibrationKind = Literal["holdout", "refit", "in_sample", "off"]


@dataclass(frozen=True, slots=True)
class SonaConfig:
    """Hyperparameters of :class:`sona.Sona`. Derive variants with ``dataclasses.replace``.

    Base model (torch)
        ``dim`` embedding size; ``hidden_dim`` user-tower width; ``epochs``,
        ``batch_size`` (users), ``lr``, ``weight_decay``; ``input_dropout`` share
        of input titles dropped in reconstruction steps; ``cut_low`` earliest
        history cut (fraction) for the predict-later objective;
        ``reconstruct_share`` share of users per step trained to reconstruct
        their whole history instead; ``softmax_candidates`` titles per training
        step: a catalog up to this size gets the exact softmax, a larger one a
        sampled softmax over this many titles (log-Q corrected), so a fit's
        cost grows with events, not with users x titles. ``max_steps`` caps
        the optimiser steps: ``epochs`` shrinks to the whole epochs that fit in
        it (at least one). A small dataset keeps its ``epochs`` (ml-100k takes
        8 steps per epoch); a streaming service's 100k viewers take 782 steps
        per epoch, and 40 passes over them would cost 40x one pass for no
        gain a smaller dataset shows. ``None`` trains every epoch.
    Profiles
        ``min_completion`` below which a viewing is ignored; decay
        ``decay_base ** (days / decay_period_days)``; ``genre_smoothing`` the
        Laplace alpha; ``people_min_count`` how many titles a person needs to
        count as a feature.
    Collaborative source
        ``collaborative``: ``"ease"`` (dense, exact), ``"sparse_ease"`` (each
        title's EASE weights over its strongest regressors, 4 per viewer who
        watched it, 16 to ``ease_neighbors``: the work follows the events, not
        the catalog), ``"itemknn"``, or ``"auto"``:
        dense EASE while its float32 n_items² weights fit ``ease_dense_max_mb``
        (256 MB: up to 8,192 titles; every serving process holds them), sparse
        EASE above. Sparse EASE at k = 128 scores 0.98-1.01x dense EASE's
        NDCG@10 (ml-100k, ml-latest-small, synthetic 5k/10k titles) with ~1 %
        of its weights (benchmarks/catalog_scale.py); ``ease_lambda``; ``knn_neighbors``.
    Fusion (applied at ranking time; no refit needed to change them)
        ``w_*``: weights of the per-user standardized sources: collaborative,
        tower, content, graph (people), popularity, trending (views within
        ``trending_days`` of the newest event), genre affinity and request context.
        ``w_sequential`` weighs the sequential source: which titles followed
        which within ``sequence_window`` titles in someone's history, applied
        to the user's last ``sequence_last`` titles weighted
        ``sequence_decay ** age`` (0 = off; :func:`sona.evaluation.tune` picks it).
    Ranking
        ``mmr_candidates`` candidates per user re-ranked by MMR when
        ``diversity > 0``; ``explore_epsilon`` chance of one exploration slot,
        decaying as ``epsilon * 0.5 ** (n_events / explore_halflife)`` (0 = off,
        the default, so evaluation is pure exploitation).
    Calibration
        ``calibration``: how ``score``'s probability map is fitted on users'
        last events. ``"holdout"`` (default) holds the last events of a
        bounded sample of users out of training and fits the map on how the
        trained model scores them, so it is not over-confident and needs no
        second fit (``"refit"``, the older name, means the same); ``"in_sample"``
        scores the same events without holding them out (optimistic at the
        top); ``"off"`` keeps the uncalibrated squash.
    Run
        ``seed`` for all randomness; ``progress`` shows a tqdm bar during fit;
        ``train_threads`` torch and BLAS threads while fitting (the tensors are small,
        so more threads mostly spin; restored afterwards); ``batch_workers``
        threads ``recommend_batch`` spreads its 1,024-user chunks over (0 = one
        per CPU core). Each worker's torch ops use torch's own thread setting,
        so with several workers ``torch.set_num_threads(1)`` avoids oversubscription.
    """

    dim: int = 64
    hidden_dim: int = 256
    epochs: int = 40
    max_steps: int | None = 8_000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    input_dropout: float = 0.3
    cut_low: float = 0.5
    reconstruct_share: float = 0.3
    softmax_candidates: int = 2048
    min_completion: float = 0.3
    decay_base: float = 0.95
    decay_period_days: float = 30.0
    genre_smoothing: float = 1.0
    people_min_count: int = 2
    collaborative: CollaborativeKind = "auto"
    ease_dense_max_mb: int = 256
    ease_lambda: float = 300.0
    ease_neighbors: int = 128
    knn_neighbors: int = 100
    w_collaborative: float = 1.0
    w_tower: float = 4.0
    w_content: float = 0.2
    w_graph: float = 0.0
    w_popularity: float = 0.0
    w_trending: float = 0.0
    w_genre: float = 0.2
    w_context: float = 0.3
    w_sequential: float = 0.0
    sequence_window: int = 10
    sequence_last: int = 20
    sequence_decay: float = 0.7
    trending_days: float = 30.0
    mmr_candidates: int = 50
    explore_epsilon: float = 0.0
    explore_halflife: float = 20.0
    calibration: CalibrationKind = "holdout"
    seed: int = 0
    progress: bool = True
    train_threads: int = 1
    batch_workers: int = 0

    def __post_init__(self) -> None:
        positive_int = (
            "dim",
            "hidden_dim",
            "batch_size",
            "people_min_count",
            "knn_neighbors",
            "ease_neighbors",
            "sequence_window",
            "sequence_last",
            "mmr_candidates",
            "softmax_candidates",
        )
        if self.max_steps is not None and (
            isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            raise ConfigError(f"SonaConfig.max_steps must be None or an integer >= 1, got {self.max_steps!r}")
        for name in positive_int:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"SonaConfig.{name} must be an integer >= 1, got {v!r}")
        for name in ("epochs", "ease_dense_max_mb", "seed", "batch_workers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"SonaConfig.{name} must be an integer >= 0, got {v!r}")
        for f in fields(self):
            if f.type != "float":  # annotations are strings here (postponed evaluation)
                continue
            v = getattr(self, f.name)
            if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
                raise ConfigError(f"SonaConfig.{f.name} must be a number, got {v!r}")
            if not math.isfinite(v):
                raise ConfigError(f"SonaConfig.{f.name} must be finite, got {v!r}")
            object.__setattr__(self, f.name, float(v))  # plain floats: comparisons and JSON just work
        unit = ("input_dropout", "cut_low", "reconstruct_share", "min_completion", "explore_epsilon")
        for name in unit:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"SonaConfig.{name} must be in [0, 1], got {v!r}")
        if not 0.0 < self.sequence_decay <= 1.0:
            raise ConfigError(f"SonaConfig.sequence_decay must be in (0, 1], got {self.sequence_decay!r}")
        if not 0.0 < self.decay_base <= 1.0:
            raise ConfigError(f"SonaConfig.decay_base must be in (0, 1], got {self.decay_base!r}")
        for name in (
            "lr",
            "decay_period_days",
            "genre_smoothing",
            "ease_lambda",
            "trending_days",
            "explore_halflife",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"SonaConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"SonaConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.collaborative not in ("auto", "ease", "sparse_ease", "itemknn"):
            raise ConfigError(
                "SonaConfig.collaborative must be 'auto', 'ease', 'sparse_ease' or 'itemknn', "
                f"got {self.collaborative!r}"
            )
        if self.calibration not in ("holdout", "refit", "in_sample", "off"):
            raise ConfigError(
                "SonaConfig.calibration must be 'holdout', 'refit', 'in_sample' or 'off', "
                f"got {self.calibration!r}"
            )
        if not isinstance(self.progress, bool):
            raise ConfigError(f"SonaConfig.progress must be a boolean, got {self.progress!r}")
