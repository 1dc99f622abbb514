"""Sequential baselines: SASRec and GRU4Rec, compact faithful torch implementations (CPU).

They are the strongest public peers on a temporal split, so the quality
benchmark runs them under the same protocol as Pop/ItemKNN/EASE and the engine.
Both read each user's qualifying titles in time order (the same events the
other baselines use), train next-title prediction at every position of the
sequence with a full softmax over the catalog (cross-entropy, as RecBole's
``loss_type="CE"``; stronger than the original one-negative BCE, see Petrov
& Macdonald 2023), and score a user by the representation after their last
title. ``observe`` appends titles to a user's sequence (new users too) without
retraining, like EASE's fold-in.

- :class:`SASRec` (Kang & McAuley 2018): learned positions, causal
  self-attention blocks (pre-norm queries, residual, point-wise feed-forward;
  padded positions masked as keys), shared input/output item embeddings.
- :class:`GRU4Rec` (Hidasi et al. 2016, with the padded-sequence training of
  RecBole): embedding, dropout, GRU, a dense projection, dot product with the
  item embeddings.

Long histories are cut into windows of ``max_len`` titles (from the end), so
every event is a training target. Training is bounded by ``epochs``, an
optional budget ``max_seconds`` of this process's CPU time (not wall time, so a
busy shared machine does not cut training short), and ``on_epoch``: a callback
after every epoch that stops training by returning True (early stopping on a
validation split). ``stop_reason_`` says which of the three ended the fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Self

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from sona.catalog import Catalog
from sona.errors import ConfigError, FitError
from sona.evaluation._baselines import _Baseline
from sona.features import engagement_weight

__all__ = ["GRU4Rec", "SASRec"]


class _SASRecNet(nn.Module):
    def __init__(self, n_items: int, dim: int, max_len: int, blocks: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.attn_norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(blocks))
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) for _ in range(blocks)
        )
        self.ffn_norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(blocks))
        self.ffn = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.Dropout(dropout)
            )
            for _ in range(blocks)
        )
        self.last_norm = nn.LayerNorm(dim, eps=1e-8)
        self.scale, self.heads = dim**0.5, heads
        nn.init.normal_(self.items.weight, std=dim**-0.5)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(b, L) item ids (0 = padding, left-padded) → (b, L, dim) states."""
        n = seq.shape[1]
        x = self.items(seq) * self.scale + self.positions.weight[:n][None]
        x = self.drop(x)
        pad = seq == 0
        x = x * (~pad)[..., None]
        # causal, and padding is never a key (as the original code and RecBole mask it); a padding
        # query keeps its own position so its row (zeroed below) is never fully masked
        own = torch.eye(n, dtype=torch.bool)[None]
        mask = (torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)[None] | pad[:, None, :]) & ~own
        mask = mask.repeat_interleave(self.heads, dim=0)
        for norm, attn, fnorm, ffn in zip(self.attn_norm, self.attn, self.ffn_norm, self.ffn, strict=True):
            q = norm(x)
            a, _ = attn(q, x, x, attn_mask=mask, need_weights=False)
            x = fnorm(q + a)
            x = x + ffn(x)
            x = x * (~pad)[..., None]
        return self.last_norm(x)

    def item_table(self) -> torch.Tensor:
        return self.items.weight


class _GRU4RecNet(nn.Module):
    def __init__(self, n_items: int, dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, hidden, num_layers=layers, batch_first=True)
        self.dense = nn.Linear(hidden, dim)
        nn.init.xavier_normal_(self.items.weight)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """(b, L) right-aligned item ids → (b, L, dim); left padding only delays the state."""
        h, _ = self.gru(self.drop(self.items(seq)))
        return self.dense(h)

    def item_table(self) -> torch.Tensor:
        return self.items.weight


class _Sequential(_Baseline):
    """Shared sequence handling, training loop and scoring of the two sequential baselines."""

    _kind = "collaborative"

    def __init__(
        self,
        catalog: Catalog,
        *,
        dim: int,
        max_len: int,
        dropout: float,
        lr: float,
        epochs: int,
        batch_size: int,
        weight_decay: float,
        max_seconds: float | None,
        seed: int,
        threads: int,
        min_completion: float,
    ) -> None:
        super().__init__(catalog, min_completion=min_completion)
        for name, v in (("dim", dim), ("max_len", max_len), ("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{type(self).__name__} {name} must be an integer >= 1, got {v!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"{type(self).__name__} dropout must be in [0, 1), got {dropout!r}")
        if not lr > 0:
            raise ConfigError(f"{type(self).__name__} lr must be > 0, got {lr!r}")
        self.dim, self.max_len, self.dropout, self.lr = dim, max_len, dropout, lr
        self.epochs, self.batch_size, self.weight_decay = epochs, batch_size, weight_decay
        self.max_seconds, self.seed, self.threads = max_seconds, seed, threads
        self.on_epoch: Callable[[int], bool | None] | None = None

    def _net(self) -> nn.Module:
        raise NotImplementedError

    def _sequences(self) -> dict[str, npt.NDArray[np.int64]]:
        """Each user's qualifying titles in time order (first view of a title only), as item ids + 1."""
        h = self.history_
        w = engagement_weight(
            h["completion_rate"], h["rating"], h["dismissed"], min_completion=self.min_completion
        )
        q = h[w > 0][["user_id", "content_id", "timestamp"]]
        q = q.sort_values(["user_id", "timestamp"], kind="stable").drop_duplicates(["user_id", "content_id"])
        items = self.catalog.index_of(q["content_id"].to_numpy()) + 1
        users = q["user_id"].astype(str).to_numpy()
        bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
        return {users[a]: items[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)}

    def _windows(self, seqs: dict[str, npt.NDArray[np.int64]]) -> torch.Tensor:
        """(n, max_len + 1) left-padded training windows cut from the end of every sequence."""
        step, rows = self.max_len, []
        for s in seqs.values():
            if len(s) < 2:
                continue
            end = len(s)
            while end > 1:
                lo = max(0, end - step - 1)
                w = s[lo:end]
                rows.append(np.pad(w, (self.max_len + 1 - len(w), 0)))
                end = lo + 1 if lo > 0 else 0
        if not rows:
            raise FitError("no user has two or more qualifying events; nothing to learn from")
        return torch.from_numpy(np.stack(rows))

    def fit(self, events: pd.DataFrame) -> Self:
        """Train from ``events``; replaces any earlier fit. ``on_epoch(epoch)``, when set, runs after
        each epoch with the network in eval mode (validation checkpoints); returning True stops
        training there (early stopping)."""
        return super().fit(events)

    def _fit_items(self) -> None:
        windows = self._windows(self._sequences())
        # small tensors: extra intra-op threads mostly spin on a busy machine (as in the engine's fit)
        prev = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            self._train(windows)
        finally:
            torch.set_num_threads(prev)

    def _train(self, windows: torch.Tensor) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            self.net_ = self._net()
            opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            start = time.process_time()
            self.epochs_run_ = 0
            self.stop_reason_ = "epochs"
            for epoch in range(self.epochs):
                self.net_.train()
                perm = torch.randperm(len(windows), generator=gen)
                loss_val = float("nan")
                for lo in range(0, len(perm), self.batch_size):
                    batch = windows[perm[lo : lo + self.batch_size]]
                    inp, tgt = batch[:, :-1], batch[:, 1:]
                    keep = (tgt > 0) & (inp > 0)
                    h = self.net_(inp)[keep]
                    logits = h @ self.net_.item_table()[1:].T
                    loss = nn.functional.cross_entropy(logits, tgt[keep] - 1)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    loss_val = float(loss.detach())
                if not np.isfinite(loss_val):
                    raise FitError(f"{type(self).__name__} training diverged (loss={loss_val})")
                self.epochs_run_ = epoch + 1
                self.net_.eval()
                if self.on_epoch is not None and self.on_epoch(epoch + 1):
                    self.stop_reason_ = "on_epoch"
                    break
                if self.max_seconds is not None and time.process_time() - start > self.max_seconds:
                    self.stop_reason_ = "max_seconds"
                    break
            self.net_.eval()

    def _rebuild(self) -> None:
        super()._rebuild()
        self.sequences_ = self._sequences()

    def _scores(self, x: sp.csr_matrix, user_ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """Scores after each user's last title; users without a sequence score 0 (popularity order
        then applies through the base class for unknown users)."""
        out = np.zeros((len(user_ids), len(self.catalog)), dtype=np.float32)
        seqs = [self.sequences_.get(str(u), _EMPTY)[-self.max_len :] for u in user_ids]
        rows = [i for i, s in enumerate(seqs) if len(s)]
        if not rows:
            return out
        batch = np.stack([np.pad(seqs[i], (self.max_len - len(seqs[i]), 0)) for i in rows])
        with torch.no_grad():
            for lo in range(0, len(rows), 256):
                h = self.net_(torch.from_numpy(batch[lo : lo + 256]))[:, -1]
                out[rows[lo : lo + 256]] = (h @ self.net_.item_table()[1:].T).numpy()
        return out


_EMPTY = np.zeros(0, dtype=np.int64)


class SASRec(_Sequential):
    """Self-attentive sequential recommendation (Kang & McAuley 2018), full-softmax training.

    Parameters
    ----------
    dim, blocks, heads
        Embedding size, attention blocks, heads per block.
    max_len
        Titles of history the model attends to (longer histories are cut into windows).
    dropout, lr, weight_decay, epochs, batch_size
        Training (Adam); ``max_seconds`` (process CPU seconds) stops after the epoch that crosses it.
    threads
        torch threads while training (restored afterwards).
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        dim: int = 64,
        blocks: int = 2,
        heads: int = 1,
        max_len: int = 50,
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        epochs: int = 50,
        batch_size: int = 128,
        max_seconds: float | None = None,
        seed: int = 0,
        threads: int = 1,
        min_completion: float = 0.3,
    ) -> None:
        super().__init__(
            catalog, dim=dim, max_len=max_len, dropout=dropout, lr=lr, epochs=epochs, batch_size=batch_size,
            weight_decay=weight_decay, max_seconds=max_seconds, seed=seed, threads=threads,
            min_completion=min_completion,
        )  # fmt: skip
        if blocks < 1 or heads < 1 or dim % heads:
            raise ConfigError(f"SASRec needs blocks >= 1 and heads dividing dim, got {blocks=}, {heads=}")
        self.blocks, self.heads = blocks, heads

    def _net(self) -> nn.Module:
        return _SASRecNet(len(self.catalog), self.dim, self.max_len, self.blocks, self.heads, self.dropout)


class GRU4Rec(_Sequential):
    """GRU-based session recommendation (Hidasi et al. 2016), full-softmax training as in RecBole.

    Parameters
    ----------
    dim, hidden, layers
        Embedding size, GRU width and depth.
    max_len, dropout, lr, weight_decay, epochs, batch_size, max_seconds, threads
        As for :class:`SASRec`.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        dim: int = 64,
        hidden: int = 128,
        layers: int = 1,
        max_len: int = 50,
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        epochs: int = 50,
        batch_size: int = 128,
        max_seconds: float | None = None,
        seed: int = 0,
        threads: int = 1,
        min_completion: float = 0.3,
    ) -> None:
        super().__init__(
            catalog, dim=dim, max_len=max_len, dropout=dropout, lr=lr, epochs=epochs, batch_size=batch_size,
            weight_decay=weight_decay, max_seconds=max_seconds, seed=seed, threads=threads,
            min_completion=min_completion,
        )  # fmt: skip
        if hidden < 1 or layers < 1:
            raise ConfigError(f"GRU4Rec needs hidden >= 1 and layers >= 1, got {hidden=}, {layers=}")
        self.hidden, self.layers = hidden, layers

    def _net(self) -> nn.Module:
        return _GRU4RecNet(len(self.catalog), self.dim, self.hidden, self.layers, self.dropout)
