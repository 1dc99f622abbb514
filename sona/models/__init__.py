"""Models: the shared base model, its user tower, item-item weights and ranking primitives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sona._lazy import lazy_exports

if TYPE_CHECKING:
    from sona.models._base_model import BaseModelParams, TrainedBase, train_base_model
    from sona.models._calibration import PlattScaling, fit_platt
    from sona.models._fusion import FusedBatch, FusionWeights, ItemTables, TrainingView
    from sona.models._item_item import ease_weights, itemknn_weights, sparse_ease_weights
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

_LAZY: dict[str, str] = {
    "BaseModelParams": "sona.models._base_model",
    "TrainedBase": "sona.models._base_model",
    "train_base_model": "sona.models._base_model",
    "PlattScaling": "sona.models._calibration",
    "fit_platt": "sona.models._calibration",
    "FusedBatch": "sona.models._fusion",
    "FusionWeights": "sona.models._fusion",
    "ItemTables": "sona.models._fusion",
    "TrainingView": "sona.models._fusion",
    "ease_weights": "sona.models._item_item",
    "itemknn_weights": "sona.models._item_item",
    "sparse_ease_weights": "sona.models._item_item",
    "explore_mask": "sona.models._ranking",
    "explore_picks": "sona.models._ranking",
    "mask_rows": "sona.models._ranking",
    "mmr_rerank": "sona.models._ranking",
    "select_top": "sona.models._ranking",
    "standardize_rows": "sona.models._ranking",
    "topk_rows": "sona.models._ranking",
    "LORA_TARGET_MODULES": "sona.models._tower",
    "TowerScorer": "sona.models._tower",
    "UserTower": "sona.models._tower",
    "Recommender": "sona.models.base",
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

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
    "sparse_ease_weights",
    "standardize_rows",
    "topk_rows",
    "train_base_model",
]
