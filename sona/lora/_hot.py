"""The packed in-memory store of hot adapters used for serving.

All resident adapters live in one stacked tensor pair per target module,
``A`` (capacity, r_max, in) and ``B`` (capacity, out, r_max), plus an index from
user id to slot. Slot 0 is all zeros: users without an adapter gather it and
get the base model exactly, so a mixed batch needs no branch and no Python
loop over users. Each adapter's ``alpha / r`` is folded into its ``B`` and
lower ranks are zero-padded to ``r_max`` (both exact), so adapters of different
rank and alpha share one stack. Residency is LRU-bounded by a byte budget.
The stacks are kept in ``dtype`` (float16 by default: half the bytes, scores
move < 1e-3) and upcast to float32 when gathered, so the products run in fp32.
The serving gather writes into per-thread float32 scratch buffers that are
reused across calls: allocating ~10 MB of fresh float32 per 1,000 users costs
more in page faults than the gather and the low-rank products together.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

from sona.errors import ConfigError
from sona.lora.layer import AdapterWeights

__all__ = ["PackedAdapters"]


class PackedAdapters:
    """LRU-bounded stacks of adapters.

    Parameters
    ----------
    shapes
        ``{module: (in_features, out_features)}`` of the targeted layers.
    max_rank
        Largest rank accepted; smaller ranks are zero-padded.
    byte_budget
        Upper bound on the bytes of the stacks; least recently used adapters
        are evicted beyond it.
    dtype
        Resident dtype of the stacks (float16, bfloat16 or float32).
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, int]],
        *,
        max_rank: int = 8,
        byte_budget: int = 64 << 20,
        dtype: torch.dtype = torch.float16,
    ) -> None:
        if max_rank < 1 or byte_budget < 1:
            raise ConfigError("PackedAdapters needs max_rank >= 1 and byte_budget >= 1")
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ConfigError(f"PackedAdapters dtype must be float16, bfloat16 or float32, got {dtype}")
        self.shapes = dict(shapes)
        self.max_rank = max_rank
        self.byte_budget = byte_budget
        self.dtype = dtype
        item = torch.empty((), dtype=dtype).element_size()
        self.slot_bytes = item * max_rank * sum(i + o for i, o in self.shapes.values())
        self.max_slots = max(2, byte_budget // self.slot_bytes)  # slot 0 is the zero adapter
        self._index: OrderedDict[str, int] = OrderedDict()
        self._versions: dict[str, int | None] = {}
        self._free: list[int] = []
        self._scratch = threading.local()
        self._alloc(min(64, self.max_slots))

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "lora_A", None)
        r = self.max_rank
        a = {m: torch.zeros(capacity, r, i, dtype=self.dtype) for m, (i, _) in self.shapes.items()}
        b = {m: torch.zeros(capacity, o, r, dtype=self.dtype) for m, (_, o) in self.shapes.items()}
        if old is not None:
            n = next(iter(old.values())).shape[0]
            for m in self.shapes:
                a[m][:n] = self.lora_A[m]
                b[m][:n] = self.lora_B[m]
            self._free.extend(range(capacity - 1, n - 1, -1))
        else:
            self._free = list(range(capacity - 1, 0, -1))
        self.lora_A, self.lora_B = a, b

    @property
    def capacity(self) -> int:
        return next(iter(self.lora_A.values())).shape[0]

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._index

    def nbytes(self) -> int:
        """Bytes held by the stacks (all slots, used or free)."""
        return self.capacity * self.slot_bytes

    def version(self, user_id: str) -> int | None:
        return self._versions.get(user_id)

    def put(self, weights: AdapterWeights) -> None:
        """Make ``weights`` resident (replacing the user's previous adapter)."""
        if weights.rank > self.max_rank:
            raise ConfigError(f"adapter rank {weights.rank} exceeds the store's max_rank {self.max_rank}")
        if set(weights.modules) - set(self.shapes):
            raise ConfigError(f"adapter targets {sorted(weights.modules)}, store holds {sorted(self.shapes)}")
        slot = self._index.pop(weights.user_id, None)
        if slot is None:
            slot = self._take_slot()
        r = weights.rank
        for m in self.shapes:
            self.lora_A[m][slot].zero_()
            self.lora_B[m][slot].zero_()
            if m in weights.lora_A:
                self.lora_A[m][slot, :r] = weights.lora_A[m]
                self.lora_B[m][slot, :, :r] = weights.lora_B[m] * weights.scaling
        self._index[weights.user_id] = slot
        self._versions[weights.user_id] = weights.version

    def _take_slot(self) -> int:
        if not self._free:
            if self.capacity < self.max_slots:
                self._alloc(min(self.max_slots, self.capacity * 2))
            else:
                evicted, slot = self._index.popitem(last=False)
                self._versions.pop(evicted, None)
                return slot
        return self._free.pop()

    def remove(self, user_id: str) -> bool:
        slot = self._index.pop(user_id, None)
        self._versions.pop(user_id, None)
        if slot is None:
            return False
        for m in self.shapes:
            self.lora_A[m][slot].zero_()
            self.lora_B[m][slot].zero_()
        self._free.append(slot)
        return True

    def slots(self, user_ids: Sequence[str]) -> torch.Tensor:
        """Slot per user (0 = no adapter); marks the hits as recently used."""
        get = self._index.get
        found = [get(u, 0) for u in user_ids]
        for u in dict.fromkeys(u for u, s in zip(user_ids, found, strict=True) if s):
            self._index.move_to_end(u)
        return torch.tensor(found, dtype=torch.long)

    def gather(
        self, slots: torch.Tensor, *, reuse: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-row A (n, r, in) and scaled B (n, out, r), upcast to float32, for ``lora_tower``.

        With ``reuse`` the result lives in this thread's scratch buffers and is
        valid only until the thread's next ``reuse`` gather (the serving hot path).
        """
        if not reuse:
            return (
                {m: t.index_select(0, slots).float() for m, t in self.lora_A.items()},
                {m: t.index_select(0, slots).float() for m, t in self.lora_B.items()},
            )
        n = len(slots)
        a_buf, b_buf = self._buffers(n)
        return (
            {m: a_buf[m][:n].copy_(t.index_select(0, slots)) for m, t in self.lora_A.items()},
            {m: b_buf[m][:n].copy_(t.index_select(0, slots)) for m, t in self.lora_B.items()},
        )

    def _buffers(self, n: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """This thread's float32 scratch of at least ``n`` rows (grown by doubling, never shrunk)."""
        cap = getattr(self._scratch, "rows", 0)
        if cap < n:
            cap, r = max(n, 2 * cap, 16), self.max_rank
            self._scratch.rows = cap
            self._scratch.bufs = (
                {m: torch.empty(cap, r, i) for m, (i, _) in self.shapes.items()},
                {m: torch.empty(cap, o, r) for m, (_, o) in self.shapes.items()},
            )
        return self._scratch.bufs
