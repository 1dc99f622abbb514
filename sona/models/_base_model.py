"""The shared base model: content-aware item embeddings and the user tower, trained in torch.

Architecture. Each title has an *input* embedding ``E_in = free_in + F @ W_in``
and an *output* embedding ``E_out = free_out + F @ W_out`` where ``F`` holds the
title's content features (genres, release decade, knowledge-graph people), so
titles with few views still land near similar content. A user's preference
vector is the L2-normalized, engagement-weighted sum of ``E_in`` over their
titles (:func:`sona.features.preference_vectors`); the user tower maps it plus
side features to a user embedding scored against ``E_out``.

Objective. Tests are the future, so the tower learns to predict a user's
*later* titles from their *earlier* ones: each step cuts every user's history
at a random point, feeds the part before the cut and puts a softmax over the
titles after it (titles already in the input are masked out). A share of steps
instead reconstructs the whole (dropped-out) history, which keeps users with
short histories useful. After training, ``E_in`` is frozen as the content
embeddings, so new users only need a preference vector: no retraining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from sona.errors import FitError
from sona.models._tower import TowerScorer, UserTower

__all__ = ["BaseModelParams", "TrainedBase", "train_base_model"]


@dataclass(frozen=True, slots=True)
class BaseModelParams:
    """Training hyperparameters.

    No defaults on purpose: they come from :class:`~sona.models.SonaConfig`
    (fields of the same name), the one place defaults and validation live.
    """

    dim: int
    hidden_dim: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    input_dropout: float
    cut_low: float
    reconstruct_share: float
    seed: int
    progress: bool
    threads: int


@dataclass(slots=True)
class TrainedBase:
    """What training leaves behind: frozen content embeddings and the scorer."""

    content_embeddings: npt.NDArray[np.float32]  # (n_items, dim), E_in
    scorer: TowerScorer
    final_loss: float


class _Net(nn.Module):
    def __init__(self, n_items: int, n_features: int, side_dim: int, p: BaseModelParams) -> None:
        super().__init__()
        self.free_in = nn.Parameter(torch.randn(n_items, p.dim) * 0.05)
        self.free_out = nn.Parameter(torch.randn(n_items, p.dim) * 0.05)
        self.w_in = nn.Parameter(torch.randn(max(n_features, 1), p.dim) * 0.05)
        self.w_out = nn.Parameter(torch.randn(max(n_features, 1), p.dim) * 0.05)
        self.bias = nn.Parameter(torch.zeros(n_items))
        self.tower = UserTower(p.dim + side_dim, p.hidden_dim, p.dim)

    def item_tables(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.free_in + torch.sparse.mm(feats, self.w_in), self.free_out + torch.sparse.mm(
            feats, self.w_out
        )


def _sparse_tensor(m: sp.csr_matrix) -> torch.Tensor:
    coo = m.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        idx, torch.from_numpy(coo.data.astype(np.float32)), m.shape, check_invariants=False
    ).coalesce()


def train_base_model(
    weights: sp.csr_matrix,
    order: sp.csr_matrix,
    side: npt.NDArray[np.float32],
    item_features: sp.csr_matrix,
    params: BaseModelParams,
) -> TrainedBase:
    """Train on users with at least two titles.

    Parameters
    ----------
    weights
        (n_users, n_items) engagement x decay weights.
    order
        Same sparsity; each entry is the title's position in the user's history
        as a fraction in [0, 1) (0 = first viewed). Defines the cut.
    side
        (n_users, side_dim) side features fed to the tower next to the preference vector.
    item_features
        (n_items, n_features) content features; may have no columns (a catalog
        without genres, years or people), then the item tables are free embeddings only.
    """
    n_users, n_items = weights.shape
    counts = np.diff(weights.indptr)
    trainable = np.flatnonzero(counts >= 2)
    if len(trainable) == 0:
        raise FitError("no user has two or more qualifying events; nothing to learn from")
    if item_features.shape[1] == 0:  # one all-zero column keeps the feature GEMMs well-shaped
        item_features = sp.csr_matrix((n_items, 1), dtype=np.float32)
    feats = _sparse_tensor(item_features.astype(np.float32))
    # Tensors here are small: intra-op threads mostly spin (15x slower on a busy
    # 2-core box), so training runs with its own thread count, restored after.
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(params.threads)
    try:
        return _train(weights, order, side, feats, item_features.shape[1], trainable, params)
    finally:
        torch.set_num_threads(prev_threads)


def _train(
    weights: sp.csr_matrix,
    order: sp.csr_matrix,
    side: npt.NDArray[np.float32],
    feats: torch.Tensor,
    n_features: int,
    trainable: npt.NDArray[np.int64],
    params: BaseModelParams,
) -> TrainedBase:
    n_items = weights.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        gen = torch.Generator().manual_seed(params.seed)
        net = _Net(n_items, n_features, side.shape[1], params)
        opt = torch.optim.AdamW(
            net.parameters(), lr=params.lr, weight_decay=params.weight_decay, foreach=True
        )
        side_t = torch.from_numpy(side.astype(np.float32))
        steps = 0
        loss_val = float("nan")
        bar = tqdm(range(params.epochs), desc="sona fit", disable=not params.progress, leave=False)
        net.train()
        for _ in bar:
            perm = trainable[torch.randperm(len(trainable), generator=gen).numpy()]
            for lo in range(0, len(perm), params.batch_size):
                users = perm[lo : lo + params.batch_size]
                w = torch.from_numpy(weights[users].toarray())
                present = w > 0
                pos = torch.from_numpy(order[users].toarray())
                b = len(users)
                cut = params.cut_low + (1.0 - params.cut_low) * torch.rand(b, 1, generator=gen)
                recon = torch.rand(b, 1, generator=gen) < params.reconstruct_share
                before = present & (pos < cut)
                after = present & (pos >= cut)
                keep = torch.rand(w.shape, generator=gen) >= params.input_dropout
                inp = torch.where(recon, present & keep, before)
                tgt = torch.where(recon, present, after).float()
                has = (tgt.sum(1) > 0) & (inp.sum(1) > 0)
                if not bool(has.any()):
                    continue
                e_in, e_out = net.item_tables(feats)
                pref = (w * inp) @ e_in
                pref = pref / pref.norm(dim=1, keepdim=True).clamp_min(1e-12)
                x = torch.cat([pref, side_t[torch.from_numpy(users)]], dim=1)
                logits = net.tower(x) @ e_out.T + net.bias
                logits = logits.masked_fill(inp & ~recon, float("-inf"))
                logp = torch.log_softmax(logits, dim=1)
                logp = torch.where(tgt > 0, logp, torch.zeros_like(logp))
                per_user = -(logp * tgt).sum(1) / tgt.sum(1).clamp_min(1.0)
                loss = per_user[has].mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                opt.step()
                steps += 1
                loss_val = float(loss.detach())
            bar.set_postfix(loss=f"{loss_val:.3f}")
        bar.close()
        if not np.isfinite(loss_val):
            raise FitError(f"base model training diverged (loss={loss_val})")
        net.eval()
        with torch.no_grad():
            e_in, e_out = net.item_tables(feats)
            scorer = TowerScorer(net.tower, n_items, params.dim)
            scorer.item_embeddings.data.copy_(e_out)
            scorer.item_bias.data.copy_(net.bias)
        scorer.eval()
        for prm in scorer.parameters():
            prm.requires_grad_(False)
    return TrainedBase(content_embeddings=e_in.numpy().astype(np.float32), scorer=scorer, final_loss=loss_val)
