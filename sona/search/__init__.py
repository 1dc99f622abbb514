"""Hybrid catalog search: BM25 + title trigrams + sentence embeddings fused by weighted RRF,
personalized by sona.

Pure library (no web imports); ``serving.discovery`` puts HTTP in front of it.
"""

from sona.search._config import DEFAULT_VARIANTS, SearchConfig
from sona.search._embedder import Embedder, MiniLMEmbedder, QueryVectorCache, encode_query, minilm_model_path
from sona.search._filters import CONTENT_RATINGS, SearchFilters, filter_mask
from sona.search._fusion import minmax, top_k, weighted_rrf
from sona.search._index import MAX_PAGE_SIZE, SearchIndex, embedding_text, keyword_text
from sona.search._people import is_opaque_person_id, readable_people
from sona.search._personalize import EnginePersonalizer, GenreAffinityPersonalizer, Personalizer
from sona.search._results import Facets, SearchHit, SearchPage
from sona.search._trigrams import TrigramIndex, char_trigrams
from sona.search._vector_cache import CachedEmbedder
from sona.search._vectors import VectorSearch, hnswlib_available

__all__ = [
    "CONTENT_RATINGS",
    "CachedEmbedder",
    "DEFAULT_VARIANTS",
    "MAX_PAGE_SIZE",
    "Embedder",
    "EnginePersonalizer",
    "Facets",
    "GenreAffinityPersonalizer",
    "MiniLMEmbedder",
    "Personalizer",
    "QueryVectorCache",
    "SearchConfig",
    "SearchFilters",
    "SearchHit",
    "SearchIndex",
    "SearchPage",
    "TrigramIndex",
    "VectorSearch",
    "char_trigrams",
    "embedding_text",
    "encode_query",
    "filter_mask",
    "hnswlib_available",
    "is_opaque_person_id",
    "keyword_text",
    "minilm_model_path",
    "minmax",
    "readable_people",
    "top_k",
    "weighted_rrf",
]
