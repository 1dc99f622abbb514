"""Training many users' adapters at once, and the per-user peft reference.

Every user's adapter is trained on that user's own data only, so the batched
trainer is the per-user trainer run for all users in lockstep: parameters are
stacked (n_users, ...), the loss is a sum of per-user means, gradients are
clipped per user, AdamW is elementwise, and initialisation and negative
sampling are seeded per user (a hash of the user id), never from a shared
random stream. The result for a user therefore does not depend on who else is
in the batch, and :func:`train_reference` (one peft adapter at a time) is an
exact oracle for :func:`train_batched`.

The objective is drift prediction: from the profile built on a user's older
titles (``x_context``), rank the user's more recent titles (``targets``) above
the titles they have not seen (all of them, by a softmax; or sampled ones, by
BPR/BCE). Every ``eval_every`` steps the held-out tail is ranked
from the profile of the whole training part (``x_eval``), as at serving time;
each user keeps the best step, and a user whose tail never improves keeps no
adapter. The tail judges, and the result holds, the adapter *shrunk* toward the
base (``config.shrinkage`` times each B): what is judged is what is served.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from sona.lora._names import adapter_name, user_seed
from sona.lora._stacked import lora_tower
from sona.lora.config import UserAdapterConfig
from sona.lora.layer import AdapterWeights, _peft_layer, attach, peft_weights, set_peft_weights
from sona.models._tower import TowerScorer

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["BatchTrainingResult", "TrainingSet", "train_batched", "train_reference"]

_MASK31 = 0x7FFFFFFF


@dataclass(slots=True)
class TrainingSet:
    """Tensors for training ``n`` users' adapters (rows align with ``user_ids``).

    ``x_context`` (n, K, in) holds one profile per cut point and
    ``targets``/``target_weight`` (n, K, P) that cut's targets, padded with weight 0;
    ``holdout``/``holdout_mask`` (n, V) likewise. ``history`` (n, n_items) marks
    every title the user touched (never sampled as a negative); ``eval_seen``
    marks the titles excluded when ranking the held-out tail.

    With ``offset_context`` (n, K, n_items) and ``offset_eval`` (n, n_items) the adapter is trained
    and judged on the *served* score, ``offset + tower_weight * zscore(tower
    logits)``: the other sources of the engine's fusion are fixed, so the
    adapter learns what they miss instead of re-learning what they know.
    """

    user_ids: list[str]
    x_context: torch.Tensor
    x_eval: torch.Tensor
    targets: torch.Tensor
    target_weight: torch.Tensor
    holdout: torch.Tensor
    holdout_mask: torch.Tensor
    history: torch.Tensor
    eval_seen: torch.Tensor
    offset_context: torch.Tensor | None = None
    offset_eval: torch.Tensor | None = None
    tower_weight: float = 1.0

    def __len__(self) -> int:
        return len(self.user_ids)

    def subset(self, rows: Sequence[int] | torch.Tensor) -> TrainingSet:
        idx = torch.as_tensor(rows, dtype=torch.long)
        return TrainingSet(
            user_ids=[self.user_ids[int(i)] for i in idx],
            x_context=self.x_context[idx],
            x_eval=self.x_eval[idx],
            targets=self.targets[idx],
            target_weight=self.target_weight[idx],
            holdout=self.holdout[idx],
            holdout_mask=self.holdout_mask[idx],
            history=self.history[idx],
            eval_seen=self.eval_seen[idx],
            offset_context=None if self.offset_context is None else self.offset_context[idx],
            offset_eval=None if self.offset_eval is None else self.offset_eval[idx],
            tower_weight=self.tower_weight,
        )


@dataclass(slots=True)
class BatchTrainingResult:
    """Trained adapters of ``user_ids`` (stacked) and each user's held-out scores.

    ``base_score``/``best_score`` are the mean of ``1/log2(rank+2)`` over the
    user's held-out titles (full ranking, fit titles excluded) without and with
    the adapter. ``kept`` is False when the adapter never beat the base.
    """

    user_ids: list[str]
    lora_A: dict[str, torch.Tensor]
    lora_B: dict[str, torch.Tensor]
    rank: int
    alpha: float
    base_score: torch.Tensor
    best_score: torch.Tensor
    best_step: torch.Tensor
    kept: torch.Tensor
    steps_run: int
    seconds: float

    def weights(self, row: int) -> AdapterWeights:
        meta = {
            "holdout_base": float(self.base_score[row]),
            "holdout_adapter": float(self.best_score[row]),
            "best_step": int(self.best_step[row]),
        }
        return AdapterWeights(
            user_id=self.user_ids[row],
            rank=self.rank,
            alpha=self.alpha,
            lora_A={m: t[row].clone() for m, t in self.lora_A.items()},
            lora_B={m: t[row].clone() for m, t in self.lora_B.items()},
            meta=meta,
        )


def _hash31(x: torch.Tensor) -> torch.Tensor:
    """A small integer hash on int64 values < 2**31 (stays inside int64, no overflow)."""
    for _ in range(2):
        x = ((x >> 16) ^ x) & _MASK31
        x = (x * 0x45D9F3B) & _MASK31
    return ((x >> 16) ^ x) & _MASK31


def _seeds(user_ids: Sequence[str], seed: int) -> torch.Tensor:
    return torch.tensor([user_seed(u, seed) for u in user_ids], dtype=torch.long)


def _uniform(seeds: torch.Tensor, shape: tuple[int, ...], salt: int) -> torch.Tensor:
    """Per-user uniform [0, 1) values of ``shape``; row ``i`` depends only on ``seeds[i]``."""
    count = int(np.prod(shape))
    j = torch.arange(count, dtype=torch.long).view(1, *shape)
    s = seeds.view(-1, *([1] * len(shape)))
    h = _hash31((s + salt * 0x3C6EF35F + j * 0x2545F491) & _MASK31)
    return h.to(torch.float32) / float(1 << 31)


def _negatives(seeds: torch.Tensor, step: int, shape: tuple[int, ...], n_items: int) -> torch.Tensor:
    """Per-user sampled title indices of ``shape`` (K, P, m); a one-round hash (this runs every step).

    The draw for (cut k, target p, j) does not depend on the padded P, so trimming
    padding (length buckets) leaves every user's negatives unchanged.
    """
    k, p, m = (torch.arange(d, dtype=torch.long) for d in shape)
    j = ((k.view(-1, 1, 1) << 16) + p.view(1, -1, 1)) * shape[2] + m.view(1, 1, -1)
    s = seeds.view(-1, 1, 1, 1)
    x = (s * 0x2545F491 + (1000 + step) * 0x3C6EF35F + j.unsqueeze(0) * 0x9E3779B1) & _MASK31
    x = ((x ^ (x >> 15)) * 0x2C1B3C6D) & _MASK31
    return (x ^ (x >> 13)) % n_items


def _init(
    scorer: TowerScorer, config: UserAdapterConfig, seeds: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A like peft (kaiming-uniform bound 1/sqrt(in)), but seeded per user; B zero."""
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    for k, m in enumerate(config.target_modules):
        layer = scorer.tower.get_submodule(m)
        assert isinstance(layer, torch.nn.Linear)
        bound = 1.0 / float(np.sqrt(layer.in_features))
        u = _uniform(seeds, (config.rank, layer.in_features), salt=k + 1)
        a[m] = (u * 2.0 - 1.0) * bound
        b[m] = torch.zeros(len(seeds), layer.out_features, config.rank)
    return a, b


def _loss(
    logits: torch.Tensor, data: TrainingSet, negatives: torch.Tensor | None, config: UserAdapterConfig
) -> torch.Tensor:
    """Sum over users of each user's weighted mean loss over all cut points' targets.

    logits (n, K, n_items); targets/weights (n, K, P); negatives (n, K, P, m), None for softmax.
    Softmax: ``-log p(target)`` among the target and every title outside the user's
    history, i.e. ``softplus(logsumexp(unseen) - s_target)``; other history titles
    (context, other targets, tail) are neither positives nor negatives.
    """
    w = data.target_weight
    s_pos = logits.gather(2, data.targets)
    if config.loss == "softmax":
        return _softmax_loss(logits.masked_fill(data.history.unsqueeze(1), float("-inf")), s_pos, w, config)
    assert negatives is not None
    n = logits.shape[0]
    neg = negatives.flatten(2)
    s_neg = logits.gather(2, neg).view_as(negatives)
    valid = (~data.history.gather(1, neg.view(n, -1))).view_as(negatives).to(logits.dtype)
    wn = w.unsqueeze(-1) * valid
    if config.loss == "bpr":
        pair = F.softplus(-(s_pos.unsqueeze(-1) - s_neg))
        per_user = (pair * wn).sum((1, 2, 3)) / (wn.sum((1, 2, 3)).clamp_min(1e-8))
    else:
        pos = (F.softplus(-s_pos) * w).sum((1, 2))
        negl = (F.softplus(s_neg) * wn).sum((1, 2, 3)) / negatives.shape[-1]
        per_user = (pos + negl) / w.sum((1, 2)).clamp_min(1e-8)
    return per_user.sum()


def _softmax_loss(
    unseen_logits: torch.Tensor, s_pos: torch.Tensor, w: torch.Tensor, config: UserAdapterConfig
) -> torch.Tensor:
    """The softmax loss of :func:`_loss` from logits already -inf on the user's history."""
    t = float(config.temperature)
    z, s_pos = (unseen_logits, s_pos) if t == 1.0 else (unseen_logits / t, s_pos / t)
    per_target = F.softplus(z.logsumexp(-1, keepdim=True) - s_pos)
    return ((per_target * w).sum((1, 2)) / w.sum((1, 2)).clamp_min(1e-8)).sum()


def _sampled(
    seeds: torch.Tensor, step: int, data: TrainingSet, config: UserAdapterConfig
) -> torch.Tensor | None:
    """This step's sampled negatives, or None when the loss needs none (softmax)."""
    if config.loss == "softmax":
        return None
    return _negatives(seeds, step, (*data.targets.shape[1:], config.negatives), data.history.shape[1])


#: Held-out columns up to which :func:`_holdout_score` counts by passes (V x n_items compares)
#: instead of bucketing (n_items x log V searches, ~10x slower per comparison here).
_COUNT_PASSES = 16


@torch.no_grad()
def _holdout_score(logits: torch.Tensor, data: TrainingSet, *, seen_masked: bool = False) -> torch.Tensor:
    """Per user: mean 1/log2(rank+2) of held-out titles, fit titles excluded. (n,)

    A held-out title's rank is the number of titles scored strictly above it. No
    full sort: with few held-out titles, one counting pass each; with many, each
    title is bucketed among the user's V sorted held-out scores (``searchsorted``,
    log V per title), and a suffix sum of the bucket counts gives every held-out
    title's rank at once. ``seen_masked``: ``logits`` are already -inf
    on the fit titles.
    """
    masked = logits if seen_masked else logits.masked_fill(data.eval_seen, float("-inf"))
    n, v_cols = data.holdout.shape
    held = masked.gather(1, data.holdout)
    if v_cols <= _COUNT_PASSES:  # a few compare-and-count passes beat bucketing every title
        rank = torch.stack([(masked > held[:, j : j + 1]).sum(1) for j in range(v_cols)], 1).to(logits.dtype)
    else:
        v_sorted, order = held.sort(dim=1)
        below = torch.searchsorted(v_sorted, masked.contiguous(), right=False)  # held-out scores < title's
        offsets = torch.arange(n).unsqueeze(1) * (v_cols + 1)
        counts = torch.bincount((below + offsets).flatten(), minlength=n * (v_cols + 1)).view(n, v_cols + 1)
        above = counts.flip(1).cumsum(1).flip(1)[:, 1:]  # titles with >= k+1 held-out scores below them
        rank = torch.empty_like(above).scatter_(1, order, above).to(logits.dtype)
    gain = 1.0 / torch.log2(rank + 2.0) * data.holdout_mask
    return gain.sum(1) / data.holdout_mask.sum(1).clamp_min(1)


def _clip_per_user(grads: list[torch.Tensor], max_norm: float) -> None:
    sq = sum(g.pow(2).flatten(1).sum(1) for g in grads)
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)  # torch's clip_grad_norm_ rule
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def _served(raw: torch.Tensor, data: TrainingSet, offset: torch.Tensor | None) -> torch.Tensor:
    """What ranking sees: raw tower logits, or the fused score around them (see TrainingSet)."""
    if offset is None:
        return raw
    centred = raw - raw.mean(dim=-1, keepdim=True)
    sd = centred.square().mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-6)  # ~5x faster than std()
    return offset + data.tower_weight * centred / sd


class _ServedScore:
    """``_served(tower logits of emb, ...)`` without z-scoring an (n, K, n_items) block.

    A row of logits is linear in ``v = [emb, 1]`` against the table ``T = [E, b]``,
    so its mean over titles is ``v·m`` and its variance ``vᵀ S v`` (``m``, ``S``:
    column mean and covariance of ``T``, computed once), as in the engine's
    fusion. The served score is then one GEMM of pre-scaled user vectors with
    the mean folded in as an extra column: three elementwise passes fewer per
    step, forward and backward. :func:`train_reference` keeps the direct form,
    so the oracle test checks this algebra too.
    """

    def __init__(self, scorer: TowerScorer, tower_weight: float) -> None:
        e, b = scorer.item_embeddings.detach(), scorer.item_bias.detach()
        table = torch.cat([e, b[:, None]], dim=1)  # (n_items, d + 1)
        self.mean = table.mean(dim=0)
        c = table - self.mean
        self.cov = c.T @ c / table.shape[0]
        self.table_t = torch.cat([table, torch.ones(table.shape[0], 1)], dim=1).T.contiguous()
        self.e_t, self.b = e.T.contiguous(), b
        self.weight = float(tower_weight)

    def coef(self, emb: torch.Tensor) -> torch.Tensor:
        """Per-row coefficients: the served score of title ``j`` is ``offset_j + coef · table_t[:, j]``."""
        v = torch.cat([emb, torch.ones_like(emb[..., :1])], dim=-1)
        mu = v @ self.mean
        sd = ((v @ self.cov) * v).sum(-1).clamp_min(0.0).sqrt().clamp_min(1e-6)
        scale = self.weight / sd
        return torch.cat([v * scale.unsqueeze(-1), (-mu * scale).unsqueeze(-1)], dim=-1)

    def __call__(self, emb: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        if offset is None:
            return emb @ self.e_t + self.b
        coef = self.coef(emb)
        n_items = offset.shape[-1]
        flat = torch.addmm(offset.reshape(-1, n_items), coef.reshape(-1, coef.shape[-1]), self.table_t)
        return flat.view(offset.shape)

    def columns(self, titles: torch.Tensor) -> torch.Tensor:
        """``table_t``'s columns of ``titles`` (..., P) as (..., P, d + 2), for :meth:`at`."""
        return self.table_t.T[titles]

    def at(self, emb: torch.Tensor, offset: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """Served scores of a few titles per row: ``offset`` (n, K, P), ``columns`` from :meth:`columns`."""
        return offset + (columns @ self.coef(emb).unsqueeze(-1)).squeeze(-1)


def _trimmed(data: TrainingSet) -> TrainingSet:
    """``data`` without padding columns no user of it needs (exact: padding has weight 0)."""
    p = max(1, int((data.target_weight > 0).sum(2).max()))
    v = max(1, int((data.holdout_mask > 0).sum(1).max()))
    data.targets, data.target_weight = data.targets[:, :, :p], data.target_weight[:, :, :p]
    data.holdout, data.holdout_mask = data.holdout[:, :v], data.holdout_mask[:, :v]
    return data


def train_batched(
    scorer: TowerScorer, data: TrainingSet, config: UserAdapterConfig, *, buckets: int = 4
) -> BatchTrainingResult:
    """Train every user's adapter in ``data`` in vectorized loops (see module notes).

    Users are split into up to ``buckets`` groups of similar target counts, each
    trimmed to its own padding: a heavy user no longer makes every row pay for
    hundreds of padded targets. Users are independent, so this changes no result.
    """
    start = time.perf_counter()
    n = len(data)
    groups = min(buckets, max(1, n // 64))
    if groups <= 1:
        result = _train_group(scorer, _trimmed(data.subset(torch.arange(n))), config)
        result.seconds = time.perf_counter() - start
        return result
    sizes = (data.target_weight > 0).sum((1, 2))
    order = torch.argsort(sizes, stable=True)
    parts = [_train_group(scorer, _trimmed(data.subset(idx)), config) for idx in order.chunk(groups)]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n)

    def cat(get: Callable[[BatchTrainingResult], torch.Tensor]) -> torch.Tensor:
        return torch.cat([get(r) for r in parts])[inverse]

    return BatchTrainingResult(
        user_ids=list(data.user_ids),
        lora_A={m: cat(lambda r, m=m: r.lora_A[m]) for m in parts[0].lora_A},
        lora_B={m: cat(lambda r, m=m: r.lora_B[m]) for m in parts[0].lora_B},
        rank=config.rank,
        alpha=config.alpha,
        base_score=cat(lambda r: r.base_score),
        best_score=cat(lambda r: r.best_score),
        best_step=cat(lambda r: r.best_step),
        kept=cat(lambda r: r.kept),
        steps_run=max(r.steps_run for r in parts),
        seconds=time.perf_counter() - start,
    )


class _Rows:
    """The users a training loop still computes, with their data in the forms the loop reads.

    For the fused softmax the user's history is folded into the fixed offsets as
    -inf (and the fit titles into the judge's), so no step masks an (n, K, n_items)
    block; the targets' own scores come from a small gather (:meth:`_ServedScore.at`).
    :meth:`keep` drops users whose early stopping has ended: they cannot change
    their result any more, and every step after costs in proportion to who is left.
    """

    def __init__(self, data: TrainingSet, seeds: torch.Tensor, served: _ServedScore, loss: str) -> None:
        self.index = torch.arange(len(data))  # rows of the caller's data
        self.data, self.seeds = data, seeds
        self.folded = data.offset_context is not None and data.offset_eval is not None and loss == "softmax"
        if self.folded:
            assert data.offset_context is not None and data.offset_eval is not None
            self.ctx = data.offset_context.masked_fill(data.history.unsqueeze(1), float("-inf"))
            self.eval = data.offset_eval.masked_fill(data.eval_seen, float("-inf"))
            self.pos_offset = data.offset_context.gather(2, data.targets)
            self.pos_columns = served.columns(data.targets)

    def keep(self, sel: torch.Tensor) -> None:
        self.index, self.seeds = self.index[sel], self.seeds[sel]
        self.data = self.data.subset(sel)
        if self.folded:
            self.ctx, self.eval = self.ctx[sel], self.eval[sel]
            self.pos_offset, self.pos_columns = self.pos_offset[sel], self.pos_columns[sel]


def _keep_params(
    opt: torch.optim.AdamW, params: list[torch.Tensor], sel: torch.Tensor, config: UserAdapterConfig
) -> tuple[torch.optim.AdamW, list[torch.Tensor]]:
    """``params`` and AdamW's per-element state restricted to rows ``sel`` (AdamW is elementwise)."""
    kept = [p.detach()[sel].clone().requires_grad_(True) for p in params]
    new = torch.optim.AdamW(kept, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    for old_p, new_p in zip(params, kept, strict=True):
        state = opt.state.get(old_p)
        if state:
            new.state[new_p] = {k: (v if v.dim() == 0 else v[sel].clone()) for k, v in state.items()}
    return new, kept


def _train_group(scorer: TowerScorer, data: TrainingSet, config: UserAdapterConfig) -> BatchTrainingResult:
    """One vectorized training loop over every user of ``data``."""
    start = time.perf_counter()
    was_training = scorer.training
    scorer.eval()
    for p in scorer.parameters():
        p.requires_grad_(False)
    n = len(data)
    seeds = _seeds(data.user_ids, config.seed)
    a0, b0 = _init(scorer, config, seeds)
    modules = list(a0)
    params = [t.requires_grad_(True) for t in (*a0.values(), *b0.values())]
    # fused: one kernel per parameter instead of a dozen elementwise passes (~8% of a 300-user run)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    scaling = config.scaling

    shrink = float(config.shrinkage)
    served = _ServedScore(scorer, data.tower_weight)
    rows = _Rows(data, seeds, served, config.loss)

    def split(ps: list[torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return dict(zip(modules, ps[: len(modules)], strict=True)), dict(
            zip(modules, ps[len(modules) :], strict=True)
        )

    def evaluate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            served_b = b if shrink == 1.0 else {m: t * shrink for m, t in b.items()}
            emb = lora_tower(scorer.tower, rows.data.x_eval, a, served_b, scaling)
            if rows.folded:
                return _holdout_score(served(emb, rows.eval), rows.data, seen_masked=True)
            return _holdout_score(served(emb, rows.data.offset_eval), rows.data)

    def loss_of(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        d = rows.data
        emb = lora_tower(scorer.tower, d.x_context, a, b, scaling, dropout=config.dropout, training=True)
        if rows.folded:
            s_pos = served.at(emb, rows.pos_offset, rows.pos_columns)
            return _softmax_loss(served(emb, rows.ctx), s_pos, d.target_weight, config)
        return _loss(served(emb, d.offset_context), d, _sampled(rows.seeds, step, d, config), config)

    a, b = split(params)
    base = evaluate(a, b)
    best = base.clone()
    best_step = torch.zeros(n, dtype=torch.long)
    best_a = {m: t.detach().clone() for m, t in a.items()}
    best_b = {m: t.detach().clone() for m, t in b.items()}
    stale = torch.zeros(n, dtype=torch.long)
    step = 0
    for step in range(1, config.steps + 1):
        loss = loss_of(a, b, step)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        _clip_per_user([p.grad for p in params if p.grad is not None], config.grad_clip)
        opt.step()
        if step % config.eval_every == 0 or step == config.steps:
            idx = rows.index
            score = evaluate(a, b)
            better = score > best[idx] + config.min_improvement
            won = idx[better]
            best[won] = score[better]
            best_step[won] = step
            for src, dst in ((a, best_a), (b, best_b)):
                for m in src:
                    dst[m][won] = src[m].detach()[better]
            stale[idx] = torch.where(better, torch.zeros_like(better, dtype=torch.long), stale[idx] + 1)
            going = stale[idx] < config.patience
            if not bool(going.any()):
                break
            if not bool(going.all()):  # users whose patience ran out leave the loop
                sel = torch.nonzero(going).flatten()
                rows.keep(sel)
                opt, params = _keep_params(opt, params, sel, config)
                a, b = split(params)
    kept = best_step > 0
    for m in best_b:  # the served (shrunk) adapter; a rejected one is exactly the base model
        best_b[m] = best_b[m] * shrink
        best_b[m][~kept] = 0.0
    scorer.train(was_training)
    return BatchTrainingResult(
        user_ids=list(data.user_ids),
        lora_A=best_a,
        lora_B=best_b,
        rank=config.rank,
        alpha=config.alpha,
        base_score=base,
        best_score=torch.where(kept, best, base),
        best_step=best_step,
        kept=kept,
        steps_run=step,
        seconds=time.perf_counter() - start,
    )


def _out_dims(scorer: TowerScorer, config: UserAdapterConfig) -> dict[str, torch.Tensor]:
    return {m: scorer.tower.get_submodule(m).weight for m in config.target_modules}


@contextmanager
def _shrunk(model: PeftModel, name: str, config: UserAdapterConfig) -> Iterator[None]:
    """Temporarily multiply adapter ``name``'s scaling in every target layer by ``config.shrinkage``."""
    layers = [_peft_layer(model, m) for m in config.target_modules]
    saved = [layer.scaling[name] for layer in layers]  # type: ignore[index]
    for layer, s in zip(layers, saved, strict=True):
        layer.scaling[name] = s * float(config.shrinkage)  # type: ignore[index]
    try:
        yield
    finally:
        for layer, s in zip(layers, saved, strict=True):
            layer.scaling[name] = s  # type: ignore[index]


def train_reference(scorer: TowerScorer, data: TrainingSet, config: UserAdapterConfig) -> BatchTrainingResult:
    """The same training, one user at a time through a real peft ``LoraModel`` (slow oracle).

    Equal to :func:`train_batched` up to float rounding when ``config.dropout == 0``
    (dropout masks are drawn differently).
    """
    start = time.perf_counter()
    name = "reference"
    model = attach(scorer, config, [name])
    model.eval()
    seeds = _seeds(data.user_ids, config.seed)
    a_init, _ = _init(scorer, config, seeds)
    out_a: dict[str, list[torch.Tensor]] = {m: [] for m in config.target_modules}
    out_b: dict[str, list[torch.Tensor]] = {m: [] for m in config.target_modules}
    bases, bests, steps_best = [], [], []
    last_step = 0
    for row, user_id in enumerate(data.user_ids):
        one = data.subset([row])
        zero = {m: torch.zeros(t.shape[0], config.rank) for m, t in _out_dims(scorer, config).items()}
        init = AdapterWeights(
            user_id, config.rank, config.alpha, {m: t[row] for m, t in a_init.items()}, zero
        )
        set_peft_weights(model, name, init)
        model.set_adapter(name)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

        def judge(one: TrainingSet = one) -> float:
            """Held-out score of the shrunk adapter: peft's per-layer scaling times the shrinkage."""
            with _shrunk(model, name, config):
                return float(_holdout_score(_served(model(one.x_eval), one, one.offset_eval), one)[0])

        with torch.no_grad():
            base = judge()
        best, best_step, stale = base, 0, 0
        best_w = peft_weights(model, name, user_id, config)
        for step in range(1, config.steps + 1):
            last_step = max(last_step, step)
            logits = _served(
                model(one.x_context), one, one.offset_context
            )  # eval mode: the base tower's own dropout stays off
            loss = _loss(logits, one, _sampled(seeds[row : row + 1], step, one, config), config)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            if step % config.eval_every == 0 or step == config.steps:
                with torch.no_grad():
                    score = judge()
                if score > best + config.min_improvement:
                    best, best_step, stale = score, step, 0
                    best_w = peft_weights(model, name, user_id, config)
                else:
                    stale += 1
                    if stale >= config.patience:
                        break
        for m in config.target_modules:
            out_a[m].append(best_w.lora_A[m])
            kept_b = best_w.lora_B[m] * float(config.shrinkage)
            out_b[m].append(kept_b if best_step > 0 else torch.zeros_like(kept_b))
        bases.append(base)
        bests.append(best)
        steps_best.append(best_step)
    best_step_t = torch.tensor(steps_best, dtype=torch.long)
    return BatchTrainingResult(
        user_ids=list(data.user_ids),
        lora_A={m: torch.stack(v) for m, v in out_a.items()},
        lora_B={m: torch.stack(v) for m, v in out_b.items()},
        rank=config.rank,
        alpha=config.alpha,
        base_score=torch.tensor(bases),
        best_score=torch.tensor(bests),
        best_step=best_step_t,
        kept=best_step_t > 0,
        steps_run=last_step,
        seconds=time.perf_counter() - start,
    )


def adapter_names(user_ids: Sequence[str]) -> list[str]:
    return [adapter_name(u) for u in user_ids]
