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

Cost. Every step works on the batch's events (index lists, never a dense
users x titles block) and on a bounded candidate set: a catalog of at most
``softmax_candidates`` titles gets the exact softmax; a larger one gets a
sampled softmax over that many titles drawn from a popularity-smoothed proposal
``q``; each distinct title drawn ``c`` times gets ``log(c / (softmax_candidates * q))``
added to its logit (log-Q correction), so the partition function is an unbiased
importance estimate of the full one. Only the item-table rows a step touches are
computed; the optimizer's update of whole tables (titles x dim per step) is the
one part that grows with the catalog, and it is small next to the rest.

Data-parallel. Under ``torchrun`` (gloo backend, CPU) every process takes
its share of each batch and the gradients are averaged in one all-reduce per
step, so the processes keep identical weights and the global batch is the
single-process one.

Checkpoints. With a ``checkpoint`` path, the network, optimizer and random
generator states are written atomically after every epoch; a later call with
the same data and parameters resumes after the last finished epoch and gives
the model an uninterrupted run would have given.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from tqdm.auto import tqdm

from sona.errors import FitError
from sona.models._tower import TowerScorer, UserTower

__all__ = ["BaseModelParams", "TrainedBase", "train_base_model"]

_CHECKPOINT_VERSION = 2


@dataclass(frozen=True, slots=True)
class BaseModelParams:
    """Training hyperparameters.

    No defaults on purpose: they come from :class:`~sona.models.SonaConfig`
    (fields of the same name), the one place defaults and validation live.
    """

    dim: int
    hidden_dim: int
    epochs: int
    max_steps: int | None
    batch_size: int
    lr: float
    weight_decay: float
    input_dropout: float
    cut_low: float
    reconstruct_share: float
    softmax_candidates: int
    seed: int
    progress: bool
    threads: int


@dataclass(slots=True)
class TrainedBase:
    """What training leaves behind: frozen content embeddings and the scorer."""

    content_embeddings: npt.NDArray[np.float32]  # (n_items, dim), E_in
    scorer: TowerScorer
    final_loss: float
    epochs_resumed: int = 0  # epochs taken from a checkpoint instead of trained in this call


class _Net(nn.Module):
    def __init__(self, n_items: int, n_features: int, side_dim: int, p: BaseModelParams) -> None:
        super().__init__()
        self.free_in = nn.Parameter(torch.randn(n_items, p.dim) * 0.05)
        self.free_out = nn.Parameter(torch.randn(n_items, p.dim) * 0.05)
        self.w_in = nn.Parameter(torch.randn(max(n_features, 1), p.dim) * 0.05)
        self.w_out = nn.Parameter(torch.randn(max(n_features, 1), p.dim) * 0.05)
        self.bias = nn.Parameter(torch.zeros(n_items))
        self.tower = UserTower(p.dim + side_dim, p.hidden_dim, p.dim)


class _Features:
    """Content features as CSR arrays, so a step builds only the item-table rows it touches."""

    def __init__(self, m: sp.csr_matrix) -> None:
        m = m.astype(np.float32).tocsr()
        m.sort_indices()
        self.csr = m
        self.full = self._bags(np.arange(m.shape[0]))

    def _bags(self, items: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sub = self.csr[items]
        return (
            torch.from_numpy(sub.indices.astype(np.int64)),
            torch.from_numpy(sub.indptr[:-1].astype(np.int64)),
            torch.from_numpy(sub.data.astype(np.float32)),
        )

    def rows(self, items: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices, offsets, values) of ``embedding_bag`` for these titles (None = all)."""
        return self.full if items is None else self._bags(items.numpy())


def _table(rows: torch.Tensor, w: torch.Tensor, feats: _Features, items: torch.Tensor | None) -> torch.Tensor:
    """``rows + (F @ w)[items]``: ``rows`` are the free embeddings of ``items`` (all titles for None)."""
    idx, off, val = feats.rows(items)
    return rows + F.embedding_bag(idx, w, off, mode="sum", per_sample_weights=val)


class _RowAdam:
    """Adam with decoupled weight decay on the rows a step touched (lazy, as TF's LazyAdam).

    The sampled objective touches a bounded set of titles per step; a dense
    AdamW would still read and write every title's moments each step, the one
    cost that grew with the catalog. The step count for bias correction is global.
    """

    def __init__(self, tables: list[nn.Parameter], lr: float, weight_decay: float) -> None:
        self.tables = tables
        self.lr, self.wd, self.b1, self.b2, self.eps = (
            lr,
            weight_decay,
            0.9,
            0.999,
            1e-8,
        )
        self.m = [torch.zeros_like(t) for t in tables]
        self.v = [torch.zeros_like(t) for t in tables]
        self.t = 0
        self.pending: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    def leaves(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Trainable copies of the tables' ``rows``; their gradients feed :meth:`step`."""
        out = [t.detach()[rows].requires_grad_() for t in self.tables]
        self.pending = (rows, out)
        return out

    @torch.no_grad()
    def step(self) -> None:
        if self.pending is None:
            return
        rows, leaves = self.pending
        self.pending = None
        self.t += 1
        c1, c2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
        for p, m, v, leaf in zip(self.tables, self.m, self.v, leaves, strict=True):
            if leaf.grad is None:
                continue
            g = leaf.grad
            mr = m[rows].mul_(self.b1).add_(g, alpha=1.0 - self.b1)
            vr = v[rows].mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
            m[rows], v[rows] = mr, vr
            pr = p.data[rows].mul_(1.0 - self.lr * self.wd)
            pr.addcdiv_(mr / c1, (vr / c2).sqrt_().add_(self.eps), value=-self.lr)
            p.data[rows] = pr

    def state_dict(self) -> dict[str, object]:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.m, self.v, self.t = state["m"], state["v"], int(state["t"])  # type: ignore[assignment, call-overload]


@dataclass(slots=True)
class _Events:
    """Users' qualifying titles as flat event arrays with CSR offsets (built once per fit)."""

    indptr: npt.NDArray[np.int64]
    item: torch.Tensor  # int64
    weight: torch.Tensor  # float32, > 0
    order: torch.Tensor  # float32, position in the user's history in [0, 1)

    @classmethod
    def build(cls, weights: sp.csr_matrix, order: sp.csr_matrix) -> _Events:
        w = weights.tocsr().copy()
        w.sort_indices()
        w.data[w.data <= 0] = 0.0
        w.eliminate_zeros()
        n_items = w.shape[1]
        rows = np.repeat(np.arange(w.shape[0], dtype=np.int64), np.diff(w.indptr))
        keys = rows * n_items + w.indices
        o = order.tocoo()
        okeys = o.row.astype(np.int64) * n_items + o.col
        srt = np.argsort(okeys, kind="stable")
        okeys, ovals = okeys[srt], o.data[srt]
        at = np.clip(np.searchsorted(okeys, keys), 0, max(len(okeys) - 1, 0))
        pos = (
            np.where(okeys[at] == keys, ovals[at], 0.0) if len(okeys) else np.zeros(len(keys))
        )  # absent from ``order`` reads as 0, as a dense toarray() would
        return cls(
            indptr=w.indptr.astype(np.int64),
            item=torch.from_numpy(w.indices.astype(np.int64)),
            weight=torch.from_numpy(w.data.astype(np.float32)),
            order=torch.from_numpy(np.asarray(pos, dtype=np.float32)),
        )

    def batch(self, users: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor]:
        """(event index, row in batch) for ``users``; rows ascending, titles ascending within a row."""
        start, stop = self.indptr[users], self.indptr[users + 1]
        lens = stop - start
        total = int(lens.sum())
        first = np.repeat(start - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        idx = first + np.arange(total, dtype=np.int64)
        row = np.repeat(np.arange(len(users), dtype=np.int64), lens)
        return torch.from_numpy(idx), torch.from_numpy(row)


def train_base_model(
    weights: sp.csr_matrix,
    order: sp.csr_matrix,
    side: npt.NDArray[np.float32],
    item_features: sp.csr_matrix,
    params: BaseModelParams,
    *,
    checkpoint: Path | None = None,
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
    checkpoint
        File written after every epoch; when it exists and was written for the
        same data and parameters, training resumes after its last epoch.
    """
    n_users, n_items = weights.shape
    events = _Events.build(weights, order)
    counts = np.diff(events.indptr)
    trainable = np.flatnonzero(counts >= 2)
    if len(trainable) == 0:
        raise FitError("no user has two or more qualifying events; nothing to learn from")
    if item_features.shape[1] == 0:  # one all-zero column keeps the feature products well-shaped
        item_features = sp.csr_matrix((n_items, 1), dtype=np.float32)
    feats = _Features(item_features)
    # Tensors here are small: intra-op threads mostly spin (15x slower on a busy
    # 2-core box), so training runs with its own thread count, restored after.
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(params.threads)
    try:
        return _train(events, side, feats, trainable, params, checkpoint)
    finally:
        torch.set_num_threads(prev_threads)


def _proposal(events: _Events, n_items: int) -> torch.Tensor:
    """Sampling distribution of negative candidates: (views + 1) ** 0.75, normalized."""
    views = np.bincount(events.item.numpy(), minlength=n_items).astype(np.float64)
    q = (views + 1.0) ** 0.75
    return torch.from_numpy(q / q.sum())


def _fingerprint(events: _Events, side: npt.NDArray[np.float32], feats: _Features, p: BaseModelParams) -> str:
    """Content hash of everything that determines training (not ``progress``/``threads``)."""
    h = hashlib.blake2b(digest_size=16)
    keep = {k: v for k, v in asdict(p).items() if k not in ("progress", "threads")}
    h.update(repr(sorted(keep.items())).encode())
    for a in (
        events.indptr,
        events.item.numpy(),
        events.weight.numpy(),
        events.order.numpy(),
        side,
    ):
        h.update(np.ascontiguousarray(a).tobytes())
    for a in (feats.csr.indptr, feats.csr.indices, feats.csr.data):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _save_checkpoint(path: Path, state: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_checkpoint(path: Path | None, fingerprint: str) -> dict[str, object] | None:
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a torn or foreign file: start over rather than fail the fit
        return None
    ok = isinstance(state, dict) and state.get("version") == _CHECKPOINT_VERSION
    return state if ok and state.get("fingerprint") == fingerprint else None


def _step_loss(
    net: _Net,
    feats: _Features,
    events: _Events,
    side_t: torch.Tensor,
    users: npt.NDArray[np.int64],
    q: torch.Tensor | None,
    params: BaseModelParams,
    gen: torch.Generator,
    lazy: _RowAdam | None = None,
) -> torch.Tensor | None:
    """Mean over the batch's users of -log p(later title | earlier titles); None if nothing to learn.

    With ``lazy`` (sampled softmax, one process) the free embeddings and biases of
    the titles the step touches are leaves that ``lazy`` updates; else the full tables.
    """
    n_items = net.bias.shape[0]
    idx, row = events.batch(users)
    item, w, pos = events.item[idx], events.weight[idx], events.order[idx]
    b = len(users)
    cut = params.cut_low + (1.0 - params.cut_low) * torch.rand(b, generator=gen)
    recon = torch.rand(b, generator=gen) < params.reconstruct_share
    keep = torch.rand(len(idx), generator=gen) >= params.input_dropout
    inp = torch.where(recon[row], keep, pos < cut[row])
    tgt = recon[row] | (pos >= cut[row])
    n_in = torch.bincount(row[inp], minlength=b)
    n_tgt = torch.bincount(row[tgt], minlength=b)
    has = (n_in > 0) & (n_tgt > 0)
    if not bool(has.any()):
        return None

    if q is None:  # exact softmax over the whole (bounded) catalog
        cand = torch.arange(n_items)
        needed, loc = None, item
        cand_loc, log_w = cand, None
        hit_row, hit_col = row, item
    else:  # sampled softmax with the log-Q correction
        s = params.softmax_candidates
        draws = torch.multinomial(q, s, replacement=True, generator=gen)
        cand, count = torch.unique(draws, return_counts=True)
        needed, inverse = torch.unique(torch.cat([item, cand]), return_inverse=True)
        loc, cand_loc = inverse[: len(item)], inverse[len(item) :]
        # each distinct draw stands for count / (s * q) titles of the full sum
        log_w = (torch.log(count.double()) - torch.log(q[cand] * s)).float()
        slot = torch.full((n_items,), -1, dtype=torch.int64)  # title -> column in the candidate block
        slot[cand] = torch.arange(len(cand))
        col = slot[item]
        hit = col >= 0
        hit_row, hit_col = row[hit], col[hit]
    if needed is None:
        free_in, free_out, bias = net.free_in, net.free_out, net.bias
    elif lazy is not None:
        free_in, free_out, bias = lazy.leaves(needed)
    else:
        free_in, free_out, bias = (
            net.free_in[needed],
            net.free_out[needed],
            net.bias[needed],
        )
    e_in = _table(free_in, net.w_in, feats, needed)
    e_out = _table(free_out, net.w_out, feats, needed)

    ii = torch.nonzero(inp).squeeze(1)
    pref = torch.zeros(b, e_in.shape[1]).index_add_(0, row[ii], w[ii, None] * e_in[loc[ii]])
    pref = pref / pref.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = net.tower(torch.cat([pref, side_t[torch.from_numpy(users)]], dim=1))

    logits = torch.addmm(bias[cand_loc], u, e_out[cand_loc].T)
    if log_w is not None:
        logits = logits + log_w
    # a user's own titles leave the candidate block: the targets come back exactly below,
    # the inputs stay out (as the full objective masks them)
    own = torch.zeros(b, len(cand), dtype=torch.bool)
    own[hit_row, hit_col] = True
    logits = logits.masked_fill(own, float("-inf"))

    tt = torch.nonzero(tgt).squeeze(1)
    rt = row[tt]
    lt = (u[rt] * e_out[loc[tt]]).sum(1) + bias[loc[tt]]
    with torch.no_grad():
        shift = logits.max(1).values.clamp_min(-1e30)
        shift = torch.maximum(shift, torch.full((b,), -1e30).scatter_reduce(0, rt, lt, "amax"))
    total = torch.exp(logits - shift[:, None]).sum(1) + torch.zeros(b).index_add_(
        0, rt, torch.exp(lt - shift[rt])
    )
    log_z = shift + torch.log(total.clamp_min(1e-30))
    nll = torch.zeros(b).index_add_(0, rt, log_z[rt] - lt) / n_tgt.clamp_min(1)
    return nll[has].mean()


def _distributed() -> tuple[int, int]:
    """(rank, world size) under ``torchrun``; (0, 1) otherwise.

    A process started by ``torchrun`` joins the gloo (CPU) process group here
    the first time, so ``torchrun -m serving.cli fit ...`` needs no other setup.
    """
    dist = torch.distributed
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if not dist.is_torchelastic_launched():
            return 0, 1
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _average_gradients(net: nn.Module, has_loss: bool) -> bool:
    """Average gradients over the processes in one all-reduce; False when no process had a loss."""
    params = list(net.parameters())
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        + [torch.tensor([1.0 if has_loss else 0.0])]
    )
    torch.distributed.all_reduce(flat)
    contributors = float(flat[-1])
    if contributors == 0:
        return False
    flat = flat[:-1] / contributors
    at = 0
    for p in params:
        n = p.numel()
        p.grad = flat[at : at + n].view_as(p).clone()
        at += n
    return True


def _train(
    events: _Events,
    side: npt.NDArray[np.float32],
    feats: _Features,
    trainable: npt.NDArray[np.int64],
    params: BaseModelParams,
    checkpoint: Path | None,
) -> TrainedBase:
    n_items = feats.csr.shape[0]
    q = _proposal(events, n_items) if n_items > params.softmax_candidates else None
    fingerprint = _fingerprint(events, side, feats, params) if checkpoint is not None else ""
    rank, world = _distributed()
    if world > 1 and checkpoint is not None:  # each process resumes its own random stream
        checkpoint = checkpoint.with_name(f"{checkpoint.name}.rank{rank}-of-{world}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)  # the same initial weights in every process
        gen = torch.Generator().manual_seed(params.seed)
        # data-parallel: one shared stream orders the users, each process its own for the rest
        order_gen = gen if world == 1 else torch.Generator().manual_seed(params.seed)
        if world > 1:
            gen.manual_seed(params.seed + 1 + rank)
        net = _Net(n_items, feats.csr.shape[1], side.shape[1], params)
        # sampled softmax in one process: the title tables get row-wise (lazy) updates
        lazy = _RowAdam([net.free_in, net.free_out, net.bias], params.lr, params.weight_decay)
        if q is None or world > 1:
            lazy = None
        tables = {id(t) for t in (lazy.tables if lazy is not None else [])}
        dense = [p for p in net.parameters() if id(p) not in tables]
        opt = torch.optim.AdamW(dense, lr=params.lr, weight_decay=params.weight_decay, foreach=True)
        side_t = torch.from_numpy(side.astype(np.float32))
        loss_val = float("nan")
        first_epoch = 0
        state = _load_checkpoint(checkpoint, fingerprint)
        if state is not None:
            net.load_state_dict(state["net"])  # type: ignore[arg-type]
            opt.load_state_dict(state["opt"])  # type: ignore[arg-type]
            if lazy is not None:
                lazy.load_state_dict(state["lazy"])  # type: ignore[arg-type]
            gen.set_state(state["gen"])  # type: ignore[arg-type]
            if world > 1:
                order_gen.set_state(state["order_gen"])  # type: ignore[arg-type]
            first_epoch = int(state["epoch"])  # type: ignore[call-overload]
            loss_val = float(state["loss"])  # type: ignore[arg-type]
        steps_per_epoch = -(-len(trainable) // params.batch_size)
        epochs = params.epochs
        if params.max_steps is not None:
            epochs = min(epochs, max(1, params.max_steps // steps_per_epoch))
        tty = params.progress and sys.stderr.isatty() and rank == 0
        bar = tqdm(
            total=epochs * steps_per_epoch,
            initial=first_epoch * steps_per_epoch,
            desc="sona fit",
            unit="step",
            disable=not tty,
            leave=False,
        )
        t0 = time.perf_counter()
        net.train()
        for epoch in range(first_epoch, epochs):
            perm = trainable[torch.randperm(len(trainable), generator=order_gen).numpy()]
            for lo in range(0, len(perm), params.batch_size):
                users = perm[lo : lo + params.batch_size][rank::world]  # this process's share
                loss = _step_loss(net, feats, events, side_t, users, q, params, gen, lazy)
                bar.update(1)
                opt.zero_grad()
                if loss is not None:
                    loss.backward()
                    loss_val = float(loss.detach())
                if world > 1 and not _average_gradients(net, loss is not None):
                    continue
                if loss is None and world == 1:
                    continue
                leaves = lazy.pending[1] if lazy is not None and lazy.pending is not None else []
                nn.utils.clip_grad_norm_([*dense, *leaves], 5.0)
                opt.step()
                if lazy is not None:
                    lazy.step()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_val:.3f}")
            if checkpoint is not None:
                extra: dict[str, object] = {"order_gen": order_gen.get_state()} if world > 1 else {}
                if lazy is not None:
                    extra["lazy"] = lazy.state_dict()
                _save_checkpoint(
                    checkpoint,
                    {
                        "version": _CHECKPOINT_VERSION,
                        "fingerprint": fingerprint,
                        "epoch": epoch + 1,
                        "loss": loss_val,
                        "net": net.state_dict(),
                        "opt": opt.state_dict(),
                        "gen": gen.get_state(),
                        **extra,
                    },
                )
        bar.close()
        if params.progress and not tty and rank == 0:  # logs and notebooks: one line instead of a bar
            trained = epochs - first_epoch
            kind = "exact" if q is None else f"sampled {params.softmax_candidates}"
            print(
                f"sona fit: {epochs} epochs ({first_epoch} resumed), {len(trainable)} users, "
                f"{n_items} titles, {kind} softmax{f', {world} processes' if world > 1 else ''}, "
                f"loss={loss_val:.3f}, {time.perf_counter() - t0:.1f} s"
                + (f" ({(time.perf_counter() - t0) / trained:.2f} s/epoch)" if trained else ""),
                file=sys.stderr,
                flush=True,
            )
        if not np.isfinite(loss_val):
            raise FitError(f"base model training diverged (loss={loss_val})")
        net.eval()
        with torch.no_grad():
            e_in = _table(net.free_in, net.w_in, feats, None)
            e_out = _table(net.free_out, net.w_out, feats, None)
            scorer = TowerScorer(net.tower, n_items, params.dim)
            scorer.item_embeddings.data.copy_(e_out)
            scorer.item_bias.data.copy_(net.bias)
        scorer.eval()
        for prm in scorer.parameters():
            prm.requires_grad_(False)
    return TrainedBase(
        content_embeddings=e_in.numpy().astype(np.float32),
        scorer=scorer,
        final_loss=loss_val,
        epochs_resumed=first_epoch,
    )
