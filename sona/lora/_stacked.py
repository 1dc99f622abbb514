"""Many users' adapters as stacked tensors: one batched forward, no loop over users.

Serving systems for many adapters (S-LoRA, Punica) compute the base layer once
for the whole batch and add each row's low-rank term with a gathered batched
product. :func:`lora_tower` does that for the user tower: ``fc(x)`` runs once on
the batch, and ``bmm(bmm(x, A_u^T), B_u^T)`` adds every row's own adapter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sona.models._tower import UserTower

__all__ = ["lora_tower"]


def _lora_linear(
    layer: torch.nn.Linear,
    x: torch.Tensor,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    scaling: float,
    dropout: float,
    training: bool,
) -> torch.Tensor:
    """``layer(x) + scaling * B A x`` with per-row A (n, r, in), B (n, out, r); x is (n, c, in)."""
    out = layer(x)
    if a is None or b is None:
        return out
    xin = F.dropout(x, dropout, training) if dropout > 0 and training else x
    low = torch.bmm(torch.bmm(xin, a.transpose(1, 2)), b.transpose(1, 2))
    return out + low * scaling if scaling != 1.0 else out + low


def lora_tower(
    tower: UserTower,
    x: torch.Tensor,
    lora_a: dict[str, torch.Tensor],
    lora_b: dict[str, torch.Tensor],
    scaling: float = 1.0,
    *,
    dropout: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """User embeddings with per-row adapters.

    Parameters
    ----------
    x
        (n, in_dim) or (n, c, in_dim): row ``i`` (and its ``c`` contexts) uses adapter ``i``.
    lora_a, lora_b
        Per target module: A (n, r, in) and B (n, out, r). Missing modules are not adapted.
        Rows with all-zero B are the base model exactly.

    Returns
    -------
    (n, out_dim) or (n, c, out_dim), matching ``x``.
    """
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(1)
    h = _lora_linear(tower.fc1, x, lora_a.get("fc1"), lora_b.get("fc1"), scaling, dropout, training)
    h = tower.dropout(tower.act(h))
    out = _lora_linear(tower.fc2, h, lora_a.get("fc2"), lora_b.get("fc2"), scaling, dropout, training)
    return out.squeeze(1) if squeeze else out
