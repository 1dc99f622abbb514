"""Honest offline evaluation: temporal splits, full-ranking metrics at K, classical baselines."""

from sona.evaluation._baselines import EASE, ItemKNN, Pop
from sona.evaluation._metrics import evaluate, per_user_metrics, ranking_metrics
from sona.evaluation._split import temporal_split

__all__ = ["EASE", "ItemKNN", "Pop", "evaluate", "per_user_metrics", "ranking_metrics", "temporal_split"]
