"""Title embeddings kept on disk, so a restarted service does not re-encode its catalog.

Encoding ml-100k's 1,682 titles with MiniLM takes 10-100 s on a small CPU, at
every start of the search service. A title's vector depends only on the model
and the text, so :class:`CachedEmbedder` keeps ``sha256(text) -> vector`` in one
file per model under a directory (the model's identity is in the file name:
vectors of another model are never reused) and encodes only texts it has not
seen. Several processes may share the directory: files are replaced
atomically, and the last writer's superset wins. A damaged file is ignored and
rewritten.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sona.search._embedder import Embedder, encode_query

__all__ = ["CachedEmbedder"]

logger = logging.getLogger("sona.search")


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class CachedEmbedder:
    """An :class:`~sona.search.Embedder` that remembers every text's vector in ``directory``.

    Parameters
    ----------
    inner
        The embedder that computes vectors the cache does not have.
    directory
        Where the cache file lives (created on first write).
    model_key
        What identifies ``inner``'s model; default: its ``model_path`` (the bundled
        MiniLM's directory when unset) and class name. Change it and the cache starts over.
    """

    def __init__(self, inner: Embedder, directory: str | Path, *, model_key: str | None = None) -> None:
        self.inner = inner
        self.directory = Path(directory)
        if model_key is None:
            path = getattr(inner, "model_path", None)
            if path is None and type(inner).__name__ == "MiniLMEmbedder":
                from sona.search._embedder import minilm_model_path

                path = minilm_model_path()
            model_key = f"{type(inner).__module__}.{type(inner).__qualname__}:{path}"
        self.model_key = model_key
        digest = hashlib.sha256(model_key.encode("utf-8")).hexdigest()[:16]
        self.path = self.directory / f"title-vectors-{digest}.npz"
        self._lock = threading.Lock()
        self._table: dict[bytes, npt.NDArray[np.float32]] | None = None

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode_query(self, text: str) -> npt.NDArray[np.float32]:
        """Queries go straight to the model (through its fast path): they are not titles."""
        return encode_query(self.inner, text)

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        with self._lock:
            table = self._load()
            keys = [_key(t) for t in texts]
            missing = list(dict.fromkeys(i for i, k in enumerate(keys) if k not in table))
            if missing:
                fresh = self.inner.encode([texts[i] for i in missing])
                for row, i in enumerate(missing):
                    table[keys[i]] = np.array(fresh[row], dtype=np.float32)
                self._save(table)
            if not texts:
                return np.empty((0, self.dim), dtype=np.float32)
            return np.stack([table[k] for k in keys]).astype(np.float32, copy=False)

    def _load(self) -> dict[bytes, npt.NDArray[np.float32]]:
        if self._table is None:
            self._table = {}
            try:
                with np.load(self.path) as data:
                    keys, vectors = data["keys"], data["vectors"]
                if keys.shape[0] == vectors.shape[0] and vectors.ndim == 2 and np.isfinite(vectors).all():
                    self._table = {bytes(k): v for k, v in zip(keys, vectors, strict=True)}
                else:
                    logger.warning("ignoring the inconsistent title-vector cache %s", self.path)
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("ignoring the unreadable title-vector cache %s: %s", self.path, exc)
        return self._table

    def _save(self, table: dict[bytes, npt.NDArray[np.float32]]) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            keys = np.array(list(table), dtype="S32")
            vectors = np.stack(list(table.values())).astype(np.float32)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npz.tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, keys=keys, vectors=vectors)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:  # a read-only or full disk costs the next start time, not this one
            logger.warning("could not write the title-vector cache %s: %s", self.path, exc)
