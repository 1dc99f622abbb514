"""Fused ranking scores as one GEMM: per-user z-scores without per-source dense blocks.

The engine ranks by a weighted sum of per-user standardized sources. The dense
ones are linear in a small per-user vector against an item table: tower
``[h, 1] · [E_out, b]``, content ``p · C``, genre ``g · G``. A row's mean and
variance over all titles then follow from the table's column mean ``m`` and
covariance ``S`` (precomputed once): ``mu = v·m`` and ``var = vᵀ S v``. So the
whole weighted sum of z-scores is one GEMM of stacked, pre-scaled user vectors
against the stacked item tables, plus a per-user constant that never changes a
ranking (kept aside as ``offset``). Item-item sources (collaborative, graph, sequential)
are materialized row-wise from the sparse interaction rows, standardized and
used as the GEMM's accumulator. The numbers equal standardizing every dense
(users × titles) block, up to float rounding, at a fraction of the memory traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch
import torch.nn.functional as F  # noqa: N812
from scipy.sparse import _sparsetools  # the C kernels behind CSR row indexing and toarray, into our buffers

__all__ = ["FusedBatch", "FusionWeights", "ItemTables", "TrainingView"]

_EPS = 1e-6  # the sd floor of ``standardize_rows``
_DENSE = ("tower", "content", "genre_affinity")
_CONSTANT = ("popularity", "trending")
_ADAPTED = "tower_adapted"  # key of the adapted tower vectors (same item table as "tower")
#: Gathered item-item entries per pass of the sparse product (2 MB of indices and values: in cache).
_GATHER_BUDGET = 1 << 18
#: Bytes of one column tile of a dense item-item matrix (stays in cache while a batch reads it).
_TILE_BYTES = 4 << 20
_TILE_MIN_ROWS = 64


@dataclass(frozen=True, slots=True)
class FusionWeights:
    """Weight of each source in the fused score (the engine's ``w_*`` fields)."""

    collaborative: float = 0.0
    tower: float = 0.0
    content: float = 0.0
    graph: float = 0.0
    genre_affinity: float = 0.0
    popularity: float = 0.0
    trending: float = 0.0
    context: float = 0.0
    sequential: float = 0.0


@dataclass(slots=True)
class _Table:
    items: npt.NDArray[np.float32]  # (n_items, d)
    mean: npt.NDArray[np.float64]  # (d,) column means
    cov: npt.NDArray[np.float64]  # (d, d) column covariance over titles (ddof=0)


def _table(items: npt.NDArray[np.floating]) -> _Table:
    a = np.ascontiguousarray(items, dtype=np.float32)
    a64 = a.astype(np.float64)
    mean = a64.mean(axis=0)
    c = a64 - mean
    return _Table(items=a, mean=mean, cov=(c.T @ c) / max(len(a), 1))


def _row_stats(x: torch.Tensor) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-row mean and population sd of a dense (b, n) block, from one sum and one norm pass."""
    n = max(x.shape[1], 1)
    mu = x.sum(dim=1).double().numpy() / n
    sq = torch.linalg.vector_norm(x, dim=1).double().numpy() ** 2 / n
    return mu, np.sqrt(np.maximum(sq - mu * mu, 0.0))


def _standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-row z-score of a dense block (``standardize_rows`` in torch)."""
    sd, mu = torch.std_mean(x, dim=1, correction=0, keepdim=True)
    return (x - mu) / sd.clamp_min(_EPS)


class _DenseItemItem:
    """A dense item-item matrix, and its column tiles once a large batch has asked for them.

    ``x @ B`` for sparse rows ``x`` is a weighted sum of B's rows per user
    (``embedding_bag``). Whole rows stream the entire matrix from memory for
    every few users; a tile of ``_TILE_BYTES`` stays in cache while every user
    of the batch reads it (2-3x faster at 5k titles). The tiles are a second
    copy of B, so they are built only for batches of ``_TILE_MIN_ROWS`` users or
    more (``recommend_batch``), never for one user's request. Tiled or not, each
    score is the same sum in the same order.
    """

    def __init__(self, m: npt.NDArray[np.floating]) -> None:
        self.matrix = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))
        self.shape = tuple(self.matrix.shape)
        n = max(self.shape[1], 1)
        self.width = max(64, _TILE_BYTES // (4 * n) // 64 * 64)
        self._tiles: list[torch.Tensor] | None = None

    def tiles(self) -> list[torch.Tensor]:
        got = self._tiles
        if got is None:  # two threads may both build them: the same tiles, one kept
            w = self.width
            got = [self.matrix[:, j : j + w].contiguous() for j in range(0, self.shape[1], w)]
            self._tiles = got
        return got

    def rows_into(self, x: sp.csr_matrix, block: torch.Tensor) -> None:
        """``block[:] = x @ B``."""
        idx = torch.from_numpy(x.indices.astype(np.int64))
        offsets = torch.from_numpy(x.indptr.astype(np.int64))
        weights = torch.from_numpy(x.data.astype(np.float32))

        def bag(table: torch.Tensor) -> torch.Tensor:
            return F.embedding_bag(
                idx, table, offsets, mode="sum", per_sample_weights=weights, include_last_offset=True
            )

        if x.shape[0] < _TILE_MIN_ROWS or self.width >= self.shape[1]:
            block.copy_(bag(self.matrix))
            return
        j = 0
        for tile in self.tiles():
            block[:, j : j + tile.shape[1]] = bag(tile)
            j += tile.shape[1]


_ItemItem = _DenseItemItem | sp.csr_matrix


def _item_item(m: npt.NDArray[np.floating] | sp.spmatrix) -> _ItemItem:
    """An item-item matrix in the layout :func:`_item_item_rows` reads: dense float32 (with
    its tiles), or CSR with float32 values and one index dtype (no copy when it already is)."""
    if not sp.issparse(m):
        return _DenseItemItem(m)
    if m.format == "csr" and m.data.dtype == np.float32 and m.indices.dtype == m.indptr.dtype:
        return m
    c = sp.csr_matrix(m)
    return sp.csr_matrix(
        (c.data.astype(np.float32), c.indices.astype(c.indptr.dtype), c.indptr), shape=c.shape, copy=False
    )


def _item_item_rows(x: sp.csr_matrix, b: _ItemItem, out: torch.Tensor | None) -> torch.Tensor:
    """Dense (batch, n_items) ``x @ b`` for sparse interaction rows ``x`` and an item-item matrix ``b``.

    A sparse ``b`` is applied a few users at a time: ``b``'s rows of each of
    their stored entries are gathered into a small reused buffer, scaled by the
    entry's weight, and scattered into the users' rows of the block (duplicates
    summed). The gathered entries are about 450 per event at 10k titles, so a
    whole 1,024-user chunk at once meant ~200 MB of fresh arrays (page faults
    on every chunk, worse with two threads) passed over four times out of
    cache; ``_GATHER_BUDGET`` entries at a time stay in cache (3-4x faster, the
    same sums in the same order). scipy's sparse x sparse product, which
    builds a sparse output first, is 5x slower. A dense ``b`` is
    :meth:`_DenseItemItem.rows_into`. ``out`` (batch, n_items) float32 is
    reused when given.
    """
    shape = (x.shape[0], b.shape[1])
    res = out if out is not None else torch.empty(shape, dtype=torch.float32)
    if isinstance(b, _DenseItemItem):
        b.rows_into(x, res)
        return res
    block = res.numpy()
    block.fill(0.0)  # the scatter adds into the block
    weights = x.data.astype(np.float32, copy=False)
    ip, idx, data = b.indptr, b.indices, b.data
    items = x.indices.astype(ip.dtype, copy=False)
    # gathered[e]: where entry e's gathered b row starts in the chunk's (virtual) gathered sequence
    gathered = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum(ip[items + 1] - ip[items], out=gathered[1:])
    at_user = gathered[x.indptr]  # the same, at each user's first entry
    if at_user[-1] == 0:
        return res
    cap = max(_GATHER_BUDGET, int(np.diff(at_user).max()))
    buf_idx, buf_data = np.empty(cap, dtype=ip.dtype), np.empty(cap, dtype=np.float32)
    lo = 0
    while lo < shape[0]:
        hi = max(lo + 1, int(np.searchsorted(at_user, at_user[lo] + _GATHER_BUDGET, side="right")) - 1)
        hi = min(hi, shape[0])
        a, z = int(x.indptr[lo]), int(x.indptr[hi])
        if z > a:
            start = gathered[a]
            per_entry = (gathered[a : z + 1] - start).astype(ip.dtype)
            _sparsetools.csr_row_index(z - a, items[a:z], ip, idx, data, buf_idx, buf_data)
            _sparsetools.csr_scale_rows(z - a, shape[1], per_entry, buf_idx, buf_data, weights[a:z])
            per_user = (at_user[lo : hi + 1] - start).astype(ip.dtype)
            _sparsetools.csr_todense(hi - lo, shape[1], per_user, buf_idx, buf_data, block[lo:hi])
        lo = hi
    return res


class ItemTables:
    """Item-side state of the fused score, built once per fitted model and shared by weight variants.

    Parameters
    ----------
    tower_items, tower_bias
        The scorer's output embeddings (n, d) and bias (n,).
    content_items
        L2-normalized content embeddings (n, d).
    genre_items
        (n, n_genres) each title's genres divided by their count.
    popularity, trending
        (n,) item priors added unstandardized.
    collaborative, graph
        Item-item matrices (dense or CSR; graph may be None).
    sequential
        (n, n) CSR title-to-next-title weights (``sona.models._transitions``), applied
        to each user's recent titles (``fuse(recent=...)``); None leaves the source out.
    """

    def __init__(
        self,
        *,
        tower_items: npt.NDArray[np.float32],
        tower_bias: npt.NDArray[np.float32],
        content_items: npt.NDArray[np.float32],
        genre_items: npt.NDArray[np.float32],
        popularity: npt.NDArray[np.float32],
        trending: npt.NDArray[np.float32],
        collaborative: npt.NDArray[np.float32] | sp.csr_matrix,
        graph: sp.csr_matrix | None,
        sequential: sp.csr_matrix | None = None,
    ) -> None:
        self.n_items = len(tower_bias)
        self.tables = {
            "tower": _table(np.hstack([tower_items, np.asarray(tower_bias)[:, None]])),
            "content": _table(content_items),
            "genre_affinity": _table(genre_items),
        }
        self.constants = {
            "popularity": np.asarray(popularity, dtype=np.float32),
            "trending": np.asarray(trending, dtype=np.float32),
        }
        self.collaborative = _item_item(collaborative)
        self.graph = None if graph is None else _item_item(graph)
        self.sequential = None if sequential is None else _item_item(sequential)
        self._stacked: dict[tuple[str, ...], torch.Tensor] = {}

    def stacked(self, names: tuple[str, ...]) -> torch.Tensor:
        """(sum of widths, n_items) contiguous transposed tables of ``names``, cached per name set."""
        got = self._stacked.get(names)
        if got is None:
            cols = [self.tables[n].items if n in self.tables else self.constants[n][:, None] for n in names]
            got = torch.from_numpy(np.ascontiguousarray(np.hstack(cols).T))
            self._stacked[names] = got
        return got

    def fuse(
        self,
        *,
        tower_user: npt.NDArray[np.float32] | None,
        preference: npt.NDArray[np.float32],
        genre_affinity: npt.NDArray[np.float32],
        interactions: sp.csr_matrix,
        weights: FusionWeights,
        adapted_user: npt.NDArray[np.float32] | None = None,
        adapted: torch.Tensor | None = None,
        base_logits: torch.Tensor | None = None,
        context: npt.NDArray[np.float32] | None = None,
        recent: sp.csr_matrix | None = None,
        detail: bool = False,
        out: torch.Tensor | None = None,
    ) -> FusedBatch:
        """Fused scores of a batch of users.

        Parameters
        ----------
        tower_user
            (b, d) user embeddings from the tower (base model, no adapter); None skips the tower.
        preference, genre_affinity
            (b, d) and (b, n_genres) profile rows.
        interactions
            (b, n_items) CSR engagement rows (zeros for unknown users).
        adapted_user
            (b, d) tower embeddings with each row's adapter (rows without one equal
            ``tower_user``). The tower enters the GEMM with these, z-scored by the
            same table statistics, so an adapter costs no logits of its own;
            :meth:`FusedBatch.parts_at` splits them into ``tower`` and ``adapter_delta``.
        adapted, base_logits
            (b, n_items) adapted and base tower logits (the LoRA path for adapter
            sets that only produce logits; prefer ``adapted_user``). Rows where
            they differ get ``w_tower * (z(adapted) - z(base))`` added, so users
            without an adapter score bit for bit as with no adapters at all.
        context
            (n_items,) request-context prior, or None.
        recent
            (b, n_items) CSR of each user's last titles, weighted by recency (the
            sequential source's input); None skips that source.
        detail
            Keep what :meth:`FusedBatch.parts_at` needs to split scores by source.
        out
            Optional (>= b, n_items) float32 scratch the block may live in (saves
            page-faulting a fresh 40 MB array per 1,024 users); the result aliases it.
        """
        b = len(preference)
        w = weights
        ones = np.ones((b, 1), dtype=np.float32)
        vectors = {"content": preference, "genre_affinity": genre_affinity}
        if tower_user is not None:
            vectors["tower"] = np.hstack([tower_user, ones])
            if adapted_user is not None:
                vectors[_ADAPTED] = np.hstack([adapted_user, ones])
        wmap = {"tower": w.tower, "content": w.content, "genre_affinity": w.genre_affinity}
        scale: dict[str, npt.NDArray[np.float64]] = {}
        mean: dict[str, npt.NDArray[np.float64]] = {}
        offset = np.zeros(b, dtype=np.float64)
        for name in _DENSE:
            if not (wmap[name] or detail) or name not in vectors:
                continue
            t = self.tables[name]
            for key in (name, _ADAPTED) if name == "tower" and _ADAPTED in vectors else (name,):
                # torch, not numpy: numpy's BLAS threads spin against the batch's worker
                # threads (a (1024, 65) @ (65, 65) product took 4-8 ms instead of 0.3)
                v = torch.from_numpy(vectors[key]).double()
                mu = (v @ torch.from_numpy(t.mean)).numpy()
                var = ((v @ torch.from_numpy(t.cov)) * v).sum(dim=1).numpy()
                scale[key] = wmap[name] / np.maximum(np.sqrt(np.maximum(var, 0.0)), _EPS)
                mean[key] = mu
        gemm = [n for n in _DENSE if n in scale and wmap[n]]
        # the GEMM's key per table: the tower goes in with each row's adapter when there is one
        key_of = {n: _ADAPTED if n == "tower" and _ADAPTED in scale else n for n in gemm}
        for n in gemm:
            offset -= scale[key_of[n]] * mean[key_of[n]]
        consts = [n for n in _CONSTANT if getattr(w, n)]
        names = (*gemm, *consts)

        sparse_raw: dict[str, torch.Tensor] = {}
        block: torch.Tensor | None = None
        for name, rows_in, mat, wt in (
            ("collaborative", interactions, self.collaborative, w.collaborative),
            ("graph", interactions, self.graph, w.graph),
            ("sequential", recent, self.sequential, w.sequential),
        ):
            if not wt or mat is None or rows_in is None:
                continue
            raw = _item_item_rows(rows_in, mat, out[:b] if out is not None and block is None else None)
            mu, sd = _row_stats(raw)
            a = wt / np.maximum(sd, _EPS)
            scale[name], mean[name] = a, mu
            offset -= a * mu
            if detail:
                sparse_raw[name] = raw
                raw = raw.clone()
            raw.mul_(torch.from_numpy(a.astype(np.float32))[:, None])
            block = raw if block is None else block.add_(raw)

        if names:
            coef = [
                (vectors[key_of[n]] * scale[key_of[n]][:, None]).astype(np.float32)
                if n in key_of
                else np.full((b, 1), getattr(w, n), dtype=np.float32)
                for n in names
            ]
            u = torch.from_numpy(np.ascontiguousarray(np.hstack(coef)))
            table = self.stacked(names)
            if block is not None:
                block.addmm_(u, table)
            elif out is not None:
                block = torch.mm(u, table, out=out[:b])
            else:
                block = torch.mm(u, table)
        if block is None:
            block = torch.zeros((b, self.n_items), dtype=torch.float32)
        delta: torch.Tensor | None = None
        if adapted is not None and base_logits is not None and (w.tower or detail):
            changed = torch.from_numpy(np.flatnonzero((adapted != base_logits).any(dim=1).numpy()))
            if len(changed):
                sub = changed if len(changed) < len(adapted) else slice(None)
                rows = changed
                d = (_standardize(adapted[sub]) - _standardize(base_logits[sub])).mul_(float(w.tower))
                block.index_add_(0, rows, d)
                if detail:
                    delta = torch.zeros((b, self.n_items), dtype=torch.float32)
                    delta[rows] = d
        ctx = None
        if context is not None:
            ctx = np.asarray(context, dtype=np.float32)
            if w.context:
                block.add_(torch.from_numpy(ctx * np.float32(w.context))[None, :])
        return FusedBatch(
            block=block,
            offset=offset,
            tables=self,
            weights=w,
            vectors=vectors,
            scale=scale,
            mean=mean,
            sparse_raw=sparse_raw,
            adapter_delta=delta,
            context=ctx,
            detail=detail,
        )


@dataclass(slots=True)
class FusedBatch:
    """Fused scores of a batch: ``fused = block + offset[:, None]``.

    ``block`` (b, n_items) float32 ranks exactly like the fused score (the
    per-user ``offset`` is constant along a row), so callers may mask it in place.
    """

    block: torch.Tensor
    offset: npt.NDArray[np.float64]
    tables: ItemTables
    weights: FusionWeights
    vectors: dict[str, npt.NDArray[np.float32]]
    scale: dict[str, npt.NDArray[np.float64]]
    mean: dict[str, npt.NDArray[np.float64]]
    sparse_raw: dict[str, torch.Tensor] = field(default_factory=dict)
    adapter_delta: torch.Tensor | None = None
    context: npt.NDArray[np.float32] | None = None
    detail: bool = False

    def fused_at(
        self, cols: npt.NDArray[np.int64], rows: npt.NDArray[np.int64] | None = None
    ) -> npt.NDArray[np.float32]:
        """(len(rows), m) fused values at ``cols`` (one row of item positions per selected row)."""
        blk = self.block if rows is None else self.block[torch.from_numpy(rows)]
        off = self.offset if rows is None else self.offset[rows]
        vals = blk.gather(1, torch.from_numpy(np.asarray(cols, dtype=np.int64))).double().numpy()
        return (vals + off[:, None]).astype(np.float32)

    def parts_at(self, cols: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[np.float32]]:
        """Each source's weighted contribution at ``cols`` (b, m), keyed like the engine's components.

        Needs ``detail=True``. Keys, in order: collaborative, tower,
        adapter_delta, content, graph, genre_affinity, popularity, trending, context
        (each only when the old dense path produced it).
        """
        if not self.detail:
            raise RuntimeError("parts_at needs a FusedBatch built with detail=True")
        w, t = self.weights, self.tables
        cols = np.asarray(cols, dtype=np.int64)
        ct = torch.from_numpy(cols)
        out: dict[str, npt.NDArray[np.float32]] = {}

        def dense(name: str, key: str | None = None) -> npt.NDArray[np.float32]:
            key = key or name
            items = t.tables[name].items[cols]  # (b, m, d)
            raw = np.einsum("bd,bmd->bm", self.vectors[key].astype(np.float64), items)
            return (self.scale[key][:, None] * (raw - self.mean[key][:, None])).astype(np.float32)

        def sparse(name: str) -> npt.NDArray[np.float32]:
            raw = self.sparse_raw[name].gather(1, ct).double().numpy()
            return (self.scale[name][:, None] * (raw - self.mean[name][:, None])).astype(np.float32)

        if "collaborative" in self.scale:
            out["collaborative"] = sparse("collaborative")
        if "sequential" in self.scale:  # item-item co-viewing too: explained as collaborative
            seq = sparse("sequential")
            out["collaborative"] = out["collaborative"] + seq if "collaborative" in out else seq
        tower = dense("tower")
        out["tower"] = tower
        if _ADAPTED in self.scale:
            out["adapter_delta"] = dense("tower", _ADAPTED) - tower
        elif self.adapter_delta is not None:
            out["adapter_delta"] = self.adapter_delta.gather(1, ct).numpy()
        else:
            out["adapter_delta"] = np.zeros_like(tower)
        if w.content:
            out["content"] = dense("content")
        if "graph" in self.scale:
            out["graph"] = sparse("graph")
        out["genre_affinity"] = dense("genre_affinity")
        for name in _CONSTANT:
            wt = getattr(w, name)
            if wt:
                out[name] = (t.constants[name][cols] * np.float32(wt)).astype(np.float32)
        if self.context is not None:
            out["context"] = (self.context[cols] * np.float32(w.context)).astype(np.float32)
        else:
            out["context"] = np.zeros_like(tower)
        return out


@dataclass(frozen=True, slots=True)
class TrainingView:
    """What the served ranking sees for some users, given only some of their events.

    Built by :meth:`sona.Sona.training_view`, so a learner of the tower (the
    per-user LoRA adapters) trains on exactly the ranking that is served,
    without rebuilding profiles or score sources itself.

    Attributes
    ----------
    user_ids
        Row order of both tensors.
    tower_inputs
        (n_users, in_dim) float32 input of the user tower.
    fixed_scores
        (n_users, n_items) float32 fused score of every source except the tower
        (no request context), or None when the view was asked without it.
    tower_weight
        Weight of the per-user z-scored tower logits in the fused score.
    """

    user_ids: list[str]
    tower_inputs: torch.Tensor
    fixed_scores: torch.Tensor | None
    tower_weight: float

    def served(self, tower_logits: torch.Tensor) -> torch.Tensor:
        """The fused score around ``tower_logits`` (n_users, n_items): ``fixed + w_tower * z(logits)``.

        Differentiable in ``tower_logits``. Without ``fixed_scores`` the logits
        are returned unchanged (the tower alone ranks).
        """
        if self.fixed_scores is None:
            return tower_logits
        return self.fixed_scores + self.tower_weight * _standardize(tower_logits)
