"""Hyperparameters of per-user LoRA adapters.

One frozen dataclass, validated at one choke point (``__post_init__``), the way
peft's ``LoraConfig`` is: every field has a default and the error names the bad
field. Derive variants with :func:`dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from sona.errors import ConfigError
from sona.models._tower import LORA_TARGET_MODULES

__all__ = ["AdapterLoss", "StorageDtype", "UserAdapterConfig"]

AdapterLoss = Literal["softmax", "bpr", "bce"]
StorageDtype = Literal["float16", "float32"]


@dataclass(frozen=True, slots=True)
class UserAdapterConfig:
    """How one user's adapter is shaped, trained, guarded and stored.

    Notes
    -----
    The objective is *drift prediction*: the adapter learns to predict a user's
    more recent titles (the last ``target_fraction`` of the training part of
    their history) from the profile built on their older titles. Reconstructing
    the whole history lowered NDCG on ml-100k; predicting the recent part raised
    it, because what we rank for is the user's future.
    """

    #: LoRA rank r of every targeted layer.
    rank: int = 4
    #: LoRA alpha; the low-rank term is scaled by ``alpha / rank``.
    alpha: float = 16.0
    #: Shrinkage of the trained adapter toward the base: every layer's B is multiplied
    #: by this before the held-out tail judges it and before it is stored and served.
    #: A per-user adapter fit on a few dozen titles overshoots; a quarter of its delta
    #: was best on ml-100k validation cut from train (see benchmarks/lora.py).
    shrinkage: float = 0.25
    #: Dropout on the LoRA input while training (peft's ``lora_dropout``).
    dropout: float = 0.0
    #: Names of the ``nn.Linear`` modules of the user tower that get adapters.
    target_modules: tuple[str, ...] = LORA_TARGET_MODULES
    #: AdamW learning rate.
    lr: float = 5e-3
    #: AdamW weight decay on the adapter weights.
    weight_decay: float = 0.0
    #: Maximum optimisation steps (one step = all of a user's training pairs).
    steps: int = 60
    #: Per-user gradient-norm clip.
    grad_clip: float = 1.0
    #: Training loss. ``"softmax"``: each target against *every* title the user has not
    #: seen (a full softmax of the served score, ``temperature``-scaled): ranking judges a
    #: target against all titles, and the few that beat it are what a sampled negative
    #: rarely hits. On ml-100k validation it lifted NDCG@10 +5.3% where BPR lifted +3.4%.
    #: ``"bpr"`` / ``"bce"``: pairs with ``negatives`` sampled unseen titles.
    loss: AdapterLoss = "softmax"
    #: Temperature of the ``"softmax"`` loss (the served score is a sum of z-scores).
    temperature: float = 1.0
    #: Negatives sampled per positive per step for ``"bpr"``/``"bce"``, from unseen titles.
    negatives: int = 8
    #: Share of the (non-held-out) history used as targets; the rest is the context.
    target_fraction: float = 0.3
    #: Older→newer cut points per user: cut ``j`` predicts the ``target_fraction`` window
    #: ending ``j`` windows before the held-out tail from the events before it, so one
    #: user's adapter sees several drift examples instead of one.
    cut_points: int = 1
    #: Weight of cut ``j``'s targets is ``cut_decay ** j``: older cuts count less, since the
    #: served profile is closest to the latest cut's.
    cut_decay: float = 1.0
    #: Share of the history held out at the end for early stopping / acceptance.
    holdout_fraction: float = 0.1
    #: Evaluate the held-out tail every this many steps.
    eval_every: int = 5
    #: Stop a user after this many evaluations without improvement.
    patience: int = 3
    #: Minimum improvement of the held-out score that counts as better.
    min_improvement: float = 0.0
    #: Qualifying events (engagement weight > 0) a user needs before training.
    min_events: int = 10
    #: Minimum seconds between two trainings of one user (``force=True`` overrides).
    min_interval_seconds: float = 300.0
    #: Adapter versions kept per user in storage.
    keep_versions: int = 3
    #: Dtype of stored weights, on disk and in the packed serving store (upcast to float32
    #: inside the product); float16 halves the size (scores move < 1e-3).
    storage_dtype: StorageDtype = "float16"
    #: Seed of initialisation and negative sampling (per user, batch-independent).
    seed: int = 0

    def __post_init__(self) -> None:
        positive_ints = (
            "rank",
            "steps",
            "negatives",
            "cut_points",
            "eval_every",
            "patience",
            "min_events",
            "keep_versions",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"UserAdapterConfig.{name} must be a positive integer, got {value!r}")
        for name in ("alpha", "lr", "grad_clip", "cut_decay", "temperature"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"UserAdapterConfig.{name} must be > 0, got {value!r}")
        for name in ("weight_decay", "min_interval_seconds", "min_improvement"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"UserAdapterConfig.{name} must be >= 0, got {value!r}")
        if not (isinstance(self.shrinkage, int | float) and 0.0 < self.shrinkage <= 1.0):
            raise ConfigError(f"UserAdapterConfig.shrinkage must be in (0, 1], got {self.shrinkage!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"UserAdapterConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("target_fraction", "holdout_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"UserAdapterConfig.{name} must be in (0, 1), got {value!r}")
        if self.loss not in ("softmax", "bpr", "bce"):
            raise ConfigError(f"UserAdapterConfig.loss must be 'softmax', 'bpr' or 'bce', got {self.loss!r}")
        if self.storage_dtype not in ("float16", "float32"):
            got = self.storage_dtype
            raise ConfigError(f"UserAdapterConfig.storage_dtype must be float16/float32, got {got!r}")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise ConfigError(
                f"UserAdapterConfig.target_modules must name modules, got {self.target_modules!r}"
            )
        if not isinstance(self.seed, int):
            raise ConfigError(f"UserAdapterConfig.seed must be an integer, got {self.seed!r}")

    @property
    def scaling(self) -> float:
        return float(self.alpha) / self.rank

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
