"""The user tower and the scorer built on it.

``UserTower`` maps a user's input (preference vector plus context features) to
a user embedding; ``TowerScorer`` scores every title as ``user_emb @ item_emb.T
+ item_bias``. The tower's two ``nn.Linear`` layers, ``fc1`` and ``fc2``, are
where per-user LoRA adapters attach: ``sona.lora`` targets them by these names
(:data:`LORA_TARGET_MODULES`), so the names and the plain-Linear structure are
part of the contract between ``sona.models`` and ``sona.lora``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LORA_TARGET_MODULES", "TowerScorer", "UserTower"]

#: Module names inside :class:`UserTower` that LoRA adapters target.
LORA_TARGET_MODULES: tuple[str, ...] = ("fc1", "fc2")


class UserTower(nn.Module):
    """Two-layer MLP: ``emb = fc2(act(fc1(x)))``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class TowerScorer(nn.Module):
    """Scores all titles for a batch of user inputs.

    ``forward(x)`` with ``x`` of shape (batch, in_dim) returns logits of shape
    (batch, n_items). ``item_embeddings`` (n_items, out_dim) and ``item_bias``
    (n_items,) are buffers or parameters set by the model that owns the scorer.
    """

    def __init__(self, tower: UserTower, n_items: int, dim: int) -> None:
        super().__init__()
        self.tower = tower
        self.item_embeddings = nn.Parameter(torch.zeros(n_items, dim))
        self.item_bias = nn.Parameter(torch.zeros(n_items))

    def user_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x) @ self.item_embeddings.T + self.item_bias
