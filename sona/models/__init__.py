"""Models: the shared base model, its user tower, item-item weights and ranking primitives."""

from sona.models._base_model import BaseModelParams, TrainedBase, train_base_model
from sona.models._calibration import PlattScaling, fit_platt
from sona.models._fusion import FusedBatch, FusionWeights, ItemTables, TrainingView
from sona.models._item_item import ease_weights, itemknn_weights
from sona.models._ranking import (
    explore_mask,
    explore_picks,
    mask_rows,
    mmr_rerank,
    select_top,
    standardize_rows,
    topk_rows,
)
from sona.models._tower import LORA_TARGET_MODULES, TowerScorer, UserTower
from sona.models.base import Recommender

__all__ = [
    "LORA_TARGET_MODULES",
    "BaseModelParams",
    "FusedBatch",
    "FusionWeights",
    "ItemTables",
    "PlattScaling",
    "Recommender",
    "TowerScorer",
    "TrainedBase",
    "TrainingView",
    "UserTower",
    "ease_weights",
    "explore_mask",
    "explore_picks",
    "fit_platt",
    "itemknn_weights",
    "mask_rows",
    "mmr_rerank",
    "select_top",
    "standardize_rows",
    "topk_rows",
    "train_base_model",
]
