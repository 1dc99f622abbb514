"""The user tower: preference vector (+ context) → user embedding.

Its two ``nn.Linear`` layers, ``fc1`` and ``fc2``, are where per-user LoRA
adapters attach (``sona.lora`` targets them by these names), so the names and
the plain-Linear structure are part of the contract. Scores are the dot
product of the user embedding with item embeddings plus an item bias.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LORA_TARGET_MODULES", "UserTower"]

#: Module names inside :class:`UserTower` that LoRA adapters target.
LORA_TARGET_MODULES: tuple[str, ...] = ("fc1", "fc2")


class UserTower(nn.Module):
    """Two-layer MLP: ``emb = fc2(act(fc1(x)))``.

    Parameters
    ----------
    in_dim
        Preference-vector dimension plus context features.
    hidden_dim, out_dim
        Hidden width and embedding width (equal to the item-embedding width).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))
