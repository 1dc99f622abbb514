"""Honest offline evaluation: temporal splits, full-ranking metrics at K, classical and sequential peers."""

from sona.evaluation._baselines import EASE, ItemKNN, Pop
from sona.evaluation._metrics import evaluate, per_user_metrics, ranking_metrics
from sona.evaluation._sequential import GRU4Rec, SASRec
from sona.evaluation._split import temporal_split
from sona.evaluation._tuning import ACTIVITY_BUCKETS, TuningResult, paired_delta, tune

__all__ = [
    "ACTIVITY_BUCKETS",
    "EASE",
    "GRU4Rec",
    "ItemKNN",
    "Pop",
    "SASRec",
    "TuningResult",
    "evaluate",
    "paired_delta",
    "per_user_metrics",
    "ranking_metrics",
    "temporal_split",
    "tune",
]
