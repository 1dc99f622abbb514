"""Hyperparameters of hybrid search: fusion weights, candidate depth, A/B variants."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sona.errors import ConfigError, ValidationError

__all__ = ["DEFAULT_VARIANTS", "SearchConfig"]

#: A/B arms of the personalization weight ``w`` in ``(1 - w)·fused + w·sona``.
DEFAULT_VARIANTS: tuple[tuple[str, float], ...] = (
    ("control", 0.0),
    ("p15", 0.15),
    ("p25", 0.25),
    ("p40", 0.40),
    ("p60", 0.60),
)


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """How keyword and semantic rankings are fused and personalized.

    Parameters
    ----------
    rrf_k
        Reciprocal Rank Fusion constant: a hit at rank ``r`` adds ``weight / (rrf_k + r)``.
        60 is the value of Cormack et al. (2009), which damps the head without ignoring the tail.
    keyword_weight, vector_weight
        RRF weight of the BM25 and the embedding ranking. 0 disables that signal entirely
        (it is neither computed nor contributes candidates), which is how keyword-only
        and vector-only baselines are run. The 1 : 0.5 default was chosen on a dev
        known-item set (benchmarks/search.py, seed 1): at 1 : 1 a keyword-only hit
        (e.g. an exact KG id) loses to titles that are merely semantically near.
    trigram_weight
        RRF weight of BM25 over character trigrams of titles, the typo-tolerant signal
        (0 disables it). Chosen on the seed-1 dev set of ``benchmarks/search.py --tune``:
        with the gate below, typo MRR@10 rises with the weight (0.74 at 0, 0.87 at 1,
        0.92 at 3, 0.96 at 5) and no other query kind moves. 3 rather than 5 leaves word
        BM25 and vectors a say when the unknown word is not a typo (a name the catalog lacks).
    trigram_on_unknown_only
        Run the trigram signal only when some query word is missing from the word
        vocabulary, i.e. when a typo is plausible. A query whose words all exist is
        served by word BM25 and vectors, and the trigram ranking cannot add noise to it.
    candidates_per_signal
        Depth of each ranking that enters fusion. The result set (and ``total_count``) is
        the union of the top lists, so it is bounded by ``3 * candidates_per_signal``.
    min_similarity
        Cosine floor for a semantic candidate, so nonsense queries do not return the whole
        catalog ordered by noise.
    title_repeats
        How often the title is repeated in the BM25 document: a cheap, standard field boost.
    personalization_weight
        Default ``w`` for an authenticated caller who names no experiment variant.
    variants
        ``(name, w)`` pairs selectable through ``experiment_variant``.
    max_query_length
        Longest accepted query, in characters.
    query_cache_size
        Query vectors kept in an LRU (0 disables), so a repeated query skips the model.
    ann
        Vector search: ``"exact"`` NumPy scan, ``"hnsw"`` hnswlib graph, or ``"auto"``:
        HNSW from ``ann_min_items`` titles on when hnswlib is installed, exact below.
    ann_min_items
        Catalog size from which ``"auto"`` builds an HNSW graph.
    hnsw_m, hnsw_ef_construction, hnsw_ef_search
        HNSW graph degree, build-time and query-time beam width (query beam is at least
        ``candidates_per_signal``); larger is more exact and slower.
    """

    rrf_k: float = 60.0
    keyword_weight: float = 1.0
    vector_weight: float = 0.5
    trigram_weight: float = 3.0
    trigram_on_unknown_only: bool = True
    candidates_per_signal: int = 200
    min_similarity: float = 0.2
    title_repeats: int = 2
    personalization_weight: float = 0.25
    variants: tuple[tuple[str, float], ...] = DEFAULT_VARIANTS
    max_query_length: int = 512
    query_cache_size: int = 4096
    ann: Literal["auto", "exact", "hnsw"] = "auto"
    ann_min_items: int = 50_000
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 256

    def __post_init__(self) -> None:
        def finite(name: str, value: float) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"SearchConfig.{name} must be a finite number, got {value!r}")

        finite("rrf_k", self.rrf_k)
        if self.rrf_k <= 0:
            raise ConfigError(f"SearchConfig.rrf_k must be > 0, got {self.rrf_k}")
        for name in ("keyword_weight", "vector_weight", "trigram_weight"):
            value = getattr(self, name)
            finite(name, value)
            if value < 0:
                raise ConfigError(f"SearchConfig.{name} must be >= 0, got {value}")
        if self.keyword_weight == 0 and self.vector_weight == 0 and self.trigram_weight == 0:
            raise ConfigError(
                "SearchConfig: at least one of keyword_weight / vector_weight / trigram_weight must be > 0"
            )
        if self.candidates_per_signal < 1:
            raise ConfigError(
                f"SearchConfig.candidates_per_signal must be >= 1, got {self.candidates_per_signal}"
            )
        finite("min_similarity", self.min_similarity)
        if self.title_repeats < 1:
            raise ConfigError(f"SearchConfig.title_repeats must be >= 1, got {self.title_repeats}")
        finite("personalization_weight", self.personalization_weight)
        if not 0.0 <= self.personalization_weight <= 1.0:
            raise ConfigError(
                f"SearchConfig.personalization_weight must be in [0, 1], got {self.personalization_weight}"
            )
        names = [n for n, _ in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError(f"SearchConfig.variants has duplicate names: {names}")
        for name, w in self.variants:
            finite(f"variants[{name!r}]", w)
            if not 0.0 <= w <= 1.0:
                raise ConfigError(f"SearchConfig.variants[{name!r}] must be in [0, 1], got {w}")
        if self.max_query_length < 1:
            raise ConfigError(f"SearchConfig.max_query_length must be >= 1, got {self.max_query_length}")
        if self.query_cache_size < 0:
            raise ConfigError(f"SearchConfig.query_cache_size must be >= 0, got {self.query_cache_size}")
        if self.ann not in ("auto", "exact", "hnsw"):
            raise ConfigError(f"SearchConfig.ann must be 'auto', 'exact' or 'hnsw', got {self.ann!r}")
        for name in ("ann_min_items", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SearchConfig.{name} must be an integer >= 1, got {value!r}")

    def weight_for(self, variant: str | None) -> float:
        """The personalization weight of an experiment arm; ``None`` gives the default.

        Raises :class:`~sona.errors.ValidationError` for an unknown arm, so a typo in a
        client's experiment config is a 4xx, not a silent fall-back to control.
        """
        if variant is None:
            return self.personalization_weight
        for name, w in self.variants:
            if name == variant:
                return w
        known = ", ".join(n for n, _ in self.variants)
        raise ValidationError("experiment_variant", f"unknown variant {variant!r}; known: {known}")
