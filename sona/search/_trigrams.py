"""Character-trigram BM25 over titles: the typo-tolerant signal.

A misspelled word ("shawshnak") shares no word token with its title, but it
shares most of its character trigrams ("#sh", "sha", "haw", ...). Scoring titles
by BM25 over trigrams (bm25s again, with trigrams as the vocabulary) ranks the
intended title high, and weighted RRF adds that ranking to the others.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import bm25s

__all__ = ["TrigramIndex", "char_trigrams"]

_WORD = re.compile(r"\w+", re.UNICODE)


def char_trigrams(text: str) -> list[str]:
    """Trigrams of each lower-cased word padded with ``#`` (``"war" → #wa, war, ar#``).

    Padding marks word starts and ends, so prefixes and suffixes count, and
    trigrams never span two words (the query may order words differently).
    """
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        padded = f"#{word}#"
        out.extend(padded[i : i + 3] for i in range(len(padded) - 2))
    return out


@dataclass(frozen=True, slots=True)
class TrigramIndex:
    """BM25 over title trigrams; ``scores(query)`` gives one float per title."""

    vocab: dict[str, int]
    bm25: bm25s.BM25

    @classmethod
    def build(cls, titles: Sequence[str]) -> TrigramIndex:
        import bm25s

        vocab: dict[str, int] = {"": 0}  # bm25s reserves an id for the empty token
        docs = [[vocab.setdefault(t, len(vocab)) for t in char_trigrams(title)] for title in titles]
        bm25 = bm25s.BM25()
        bm25.index((docs, vocab), create_empty_token=False, show_progress=False)
        return cls(vocab=vocab, bm25=bm25)

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """BM25 score of every title for the query's known trigrams (all zeros if none is known)."""
        ids = {self.vocab[t] for t in char_trigrams(query) if t in self.vocab}
        ids.discard(0)
        if not ids:
            return np.zeros(self.bm25.scores["num_docs"], dtype=np.float32)
        return self.bm25.get_scores_from_ids(sorted(ids)).astype(np.float32, copy=False)
