"""The hybrid search index: BM25 (bm25s) + title trigrams + embeddings, fused by weighted RRF.

All learned state lives in one immutable :class:`_IndexState`; ``fit`` and
``refresh`` build a new one and swap a single attribute, so a search running
during a refresh sees either the old catalog or the new one, never a mix.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from sona.catalog import Catalog, ContentItem
from sona.errors import ConfigError, DataError, NotFittedError, UnknownUserError, ValidationError
from sona.search._config import SearchConfig
from sona.search._embedder import Embedder, QueryVectorCache
from sona.search._filters import CatalogArrays, SearchFilters, filter_mask
from sona.search._fusion import minmax, top_k, weighted_rrf
from sona.search._personalize import Personalizer
from sona.search._results import Facets, SearchHit, SearchPage
from sona.search._trigrams import TrigramIndex
from sona.search._vectors import VectorSearch

if TYPE_CHECKING:
    import bm25s

__all__ = ["MAX_PAGE_SIZE", "SearchIndex", "embedding_text", "keyword_text"]

MAX_PAGE_SIZE = 100
# MovieLens-style sort titles ("Shawshank Redemption, The") read better for a sentence model
# in natural order; BM25 drops the article as a stopword either way.
_TRAILING_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<art>The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El)$")


def _natural_title(title: str) -> str:
    m = _TRAILING_ARTICLE.match(title.strip())
    return f"{m['art']} {m['rest']}" if m else title


def keyword_text(item: ContentItem, title_repeats: int = 2) -> str:
    """The BM25 document of a title: title (repeated as a field boost), year, genres, overview, people.

    People are knowledge-graph ids on MovieLens (e.g. ``m.0bln8``); they tokenize to
    ``0bln8`` and are searchable as exact ids (the KG files carry no human names).
    """
    year = str(item.release_year) if item.release_year is not None else ""
    return " ".join([*([item.title] * title_repeats), year, *item.genres, item.overview, *item.people])


def embedding_text(item: ContentItem) -> str:
    """The text a sentence model sees: natural-order title, year, genres, overview (no KG ids)."""
    year = f" ({item.release_year})" if item.release_year is not None else ""
    genres = f". {', '.join(item.genres)}" if item.genres else ""
    overview = f". {item.overview}" if item.overview else ""
    return f"{_natural_title(item.title)}{year}{genres}{overview}"


@dataclass(frozen=True, slots=True)
class _IndexState:
    catalog: Catalog
    arrays: CatalogArrays
    tokenizer: bm25s.tokenization.Tokenizer | None
    bm25: bm25s.BM25 | None
    trigrams: TrigramIndex | None
    vector_search: VectorSearch | None
    embed_texts: npt.NDArray[np.object_]

    @property
    def vectors(self) -> npt.NDArray[np.float32] | None:
        """Title vectors ``(n_items, dim)``, rows L2-normalized; ``None`` without the semantic signal."""
        return self.vector_search.vectors if self.vector_search is not None else None


class SearchIndex:
    """Hybrid keyword + semantic search over a :class:`~sona.Catalog`, optionally personalized.

    Parameters
    ----------
    embedder
        Encodes titles and queries; may be ``None`` only when ``config.vector_weight == 0``.
    config
        Fusion weights, candidate depth and experiment arms.
    personalizer
        Scores the candidates for an authenticated user in one batched call.

    Examples
    --------
    >>> index = SearchIndex(MiniLMEmbedder()).fit(catalog)            # doctest: +SKIP
    >>> page = index.search("star wars", filters=SearchFilters(blocked_genres=("Horror",)))  # doctest: +SKIP
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        config: SearchConfig | None = None,
        personalizer: Personalizer | None = None,
    ) -> None:
        self.embedder = embedder
        self.config = config or SearchConfig()
        self.personalizer = personalizer

    # -- building -------------------------------------------------------------
    def fit(self, catalog: Catalog, item_vectors: npt.ArrayLike | None = None) -> SearchIndex:
        """Index ``catalog`` from scratch; replaces any previous index. Returns ``self``.

        ``item_vectors`` are precomputed embeddings aligned with catalog order (e.g. from
        a cache or sona's content tower); otherwise the embedder encodes every title.
        """
        self.state_ = self._build(catalog, item_vectors, previous=None)
        self.query_cache_ = QueryVectorCache(self.config.query_cache_size)
        return self

    def refresh(self, catalog: Catalog) -> SearchIndex:
        """Re-index after the catalog changed, re-embedding only titles whose text changed.

        The new index is built aside and swapped in, so concurrent searches are never
        served a half-built index.
        """
        self.state_ = self._build(catalog, None, previous=getattr(self, "state_", None))
        if not hasattr(self, "query_cache_"):
            self.query_cache_ = QueryVectorCache(self.config.query_cache_size)
        return self

    def _build(
        self, catalog: Catalog, item_vectors: npt.ArrayLike | None, previous: _IndexState | None
    ) -> _IndexState:
        cfg = self.config
        items = catalog.items
        tokenizer = bm25 = None
        if cfg.keyword_weight > 0:
            import bm25s  # lazily: `import sona` should not pay for it

            tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
            docs = [keyword_text(it, cfg.title_repeats) for it in items]
            ids = tokenizer.tokenize(docs, update_vocab=True, return_as="ids", show_progress=False)
            bm25 = bm25s.BM25()
            bm25.index((ids, tokenizer.get_vocab_dict()), show_progress=False)
        trigrams = (
            TrigramIndex.build([_natural_title(it.title) for it in items]) if cfg.trigram_weight > 0 else None
        )
        texts = np.array([embedding_text(it) for it in items], dtype=object)
        vector_search = None
        if cfg.vector_weight > 0:
            vector_search = VectorSearch.build(self._vectors(texts, item_vectors, previous), cfg)
        return _IndexState(
            catalog=catalog,
            arrays=CatalogArrays.from_catalog(catalog),
            tokenizer=tokenizer,
            bm25=bm25,
            trigrams=trigrams,
            vector_search=vector_search,
            embed_texts=texts,
        )

    def _vectors(
        self,
        texts: npt.NDArray[np.object_],
        item_vectors: npt.ArrayLike | None,
        previous: _IndexState | None,
    ) -> npt.NDArray[np.float32]:
        if item_vectors is not None:
            vec = np.asarray(item_vectors, dtype=np.float32)
            if vec.ndim != 2 or vec.shape[0] != len(texts) or not np.isfinite(vec).all():
                raise DataError(
                    f"item_vectors must be finite with shape ({len(texts)}, dim), got {vec.shape}"
                )
            norms = np.linalg.norm(vec, axis=1, keepdims=True)
            return np.ascontiguousarray(vec / np.where(norms > 0, norms, 1.0), dtype=np.float32)
        if self.embedder is None:
            raise ConfigError("vector_weight > 0 needs an embedder or precomputed item_vectors")
        reuse = np.full(len(texts), -1, dtype=np.int64)
        if previous is not None and previous.vectors is not None:
            # Same text -> same vector. Titles may share a text (ml-100k repeats some), so look
            # up against each text's first position; get_indexer refuses a non-unique index.
            known = pd.Index(previous.embed_texts)
            first = np.flatnonzero(~known.duplicated())
            hit = known[first].get_indexer(texts)
            reuse = np.where(hit >= 0, first[hit], -1)
        todo = np.flatnonzero(reuse < 0)
        dim = previous.vectors.shape[1] if previous is not None and previous.vectors is not None else None
        fresh = self.embedder.encode(list(texts[todo])) if todo.size else None
        dim = dim or (fresh.shape[1] if fresh is not None else self.embedder.dim)
        out = np.empty((len(texts), dim), dtype=np.float32)
        if todo.size and fresh is not None:
            out[todo] = fresh
        kept = np.flatnonzero(reuse >= 0)
        if kept.size and previous is not None and previous.vectors is not None:
            out[kept] = previous.vectors[reuse[kept]]
        return out

    # -- querying -------------------------------------------------------------
    def _state(self) -> _IndexState:
        state = getattr(self, "state_", None)
        if state is None:
            raise NotFittedError("SearchIndex.fit has not been called")
        return state

    @property
    def catalog(self) -> Catalog:
        return self._state().catalog

    def _query_tokens(self, state: _IndexState, query: str) -> npt.NDArray[np.int64]:
        assert state.tokenizer is not None
        ids = state.tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)[0]
        empty = state.tokenizer.get_vocab_dict().get("")
        return np.unique(np.array([i for i in ids if i != empty], dtype=np.int64))

    def _may_have_typo(self, state: _IndexState, query: str) -> bool:
        """Whether some query word is unknown to the word vocabulary (always True without one)."""
        if not self.config.trigram_on_unknown_only or state.tokenizer is None:
            return True
        vocab = state.tokenizer.get_vocab_dict()
        return any(t not in vocab for t in self._terms(state, query))

    def search(
        self,
        query: str,
        *,
        filters: SearchFilters | None = None,
        page: int = 1,
        page_size: int = 20,
        user_id: str | None = None,
        experiment_variant: str | None = None,
    ) -> SearchPage:
        """Rank the catalog for ``query``; personalize when ``user_id`` is given.

        Filters are applied before either ranking is cut to its top candidates, so a
        filtered-out title can never take a slot. With a user and a personalizer the
        order is ``(1 - w)·minmax(rrf) + w·score / max(score)``, ``w`` from the
        experiment arm (or the config default); without a user, the anonymous order.
        The personal score is taken relative to the best candidate of the query:
        a calibrated chance of being watched next is a few percent at most, so
        raw it could never move a [0, 1] relevance, while the ratio keeps how
        much more the user wants one candidate than another.

        Raises
        ------
        ValidationError
            Empty or over-long query, page < 1, page_size outside [1, 100], unknown variant.
        NotFittedError
            ``fit`` was never called.
        """
        started = time.perf_counter()
        cfg = self.config
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("query", "must be a non-empty string")
        if len(query) > cfg.max_query_length:
            raise ValidationError("query", f"must be at most {cfg.max_query_length} characters")
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise ValidationError("page", f"must be an integer >= 1, got {page!r}")
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or not 1 <= page_size <= MAX_PAGE_SIZE
        ):
            raise ValidationError(
                "page_size", f"must be an integer in [1, {MAX_PAGE_SIZE}], got {page_size!r}"
            )
        weight = cfg.weight_for(experiment_variant)
        state = self._state()
        mask = filter_mask(state.arrays, filters)
        n_valid = int(np.count_nonzero(mask))
        k = cfg.candidates_per_signal

        rankings: list[npt.NDArray[np.int64]] = []
        weights: list[float] = []
        kw_scores = qv = None
        vector_rank = fuzzy_rank = np.empty(0, dtype=np.int64)
        if state.bm25 is not None:
            tokens = self._query_tokens(state, query)
            if tokens.size:
                kw_scores = state.bm25.get_scores_from_ids(tokens.tolist()).astype(np.float32, copy=False)
            else:
                kw_scores = np.zeros(len(state.catalog), dtype=np.float32)
            rankings.append(top_k(kw_scores, mask & (kw_scores > 0), k))
            weights.append(cfg.keyword_weight)
        if state.trigrams is not None and n_valid and self._may_have_typo(state, query):
            tri = state.trigrams.scores(query)
            fuzzy_rank = top_k(tri, mask & (tri > 0), k)
            rankings.append(fuzzy_rank)
            weights.append(cfg.trigram_weight)
        if state.vector_search is not None:
            if self.embedder is None:
                raise ConfigError("an index built from item_vectors still needs an embedder for queries")
            qv = self.query_cache_.get(self.embedder, query)
            vector_rank = state.vector_search.top(qv, mask, n_valid, k, cfg.min_similarity)
            rankings.append(vector_rank)
            weights.append(cfg.vector_weight)
        items, fused = weighted_rrf(rankings, weights, cfg.rrf_k)
        final = minmax(fused)

        personal: npt.NDArray[np.float64] | None = None
        if user_id is not None and self.personalizer is not None and weight > 0 and items.size:
            try:
                raw = self.personalizer.score(user_id, list(state.catalog.ids[items]))
            except UnknownUserError:
                raw = None  # a valid caller with no history: nothing to personalize on
            if raw is not None:
                personal = np.clip(np.nan_to_num(np.asarray(raw, dtype=np.float64).reshape(-1)), 0.0, 1.0)
                if personal.shape != items.shape:
                    raise DataError(f"personalizer returned {personal.shape} scores for {items.size} titles")
                top = float(personal.max())
                final = (1.0 - weight) * final + weight * (personal / top if top > 0.0 else personal)

        order = np.lexsort((items, -final))
        lo = (page - 1) * page_size
        sel = order[lo : lo + page_size]
        page_items = items[sel]
        sims = (
            state.vector_search.similarity(qv, page_items)
            if state.vector_search is not None and qv is not None
            else None
        )
        semantic = np.isin(page_items, vector_rank)
        fuzzy = np.isin(page_items, fuzzy_rank)
        query_terms = self._terms(state, query)
        hits = tuple(
            SearchHit(
                content=state.catalog.item_at(int(i)),
                relevance_score=float(final[s]),
                match_reasons=self._reasons(
                    state, int(i), query_terms, bool(semantic[j]), bool(fuzzy[j]), personal, int(s)
                ),
                keyword_score=float(kw_scores[i]) if kw_scores is not None else None,
                vector_similarity=float(sims[j]) if sims is not None else None,
                personalization_score=float(personal[s]) if personal is not None else None,
            )
            for j, (i, s) in enumerate(zip(page_items, sel, strict=True))
        )
        return SearchPage(
            hits=hits,
            total_count=int(items.size),
            page=page,
            page_size=page_size,
            facets=self._facets(state, items),
            search_time_ms=(time.perf_counter() - started) * 1000.0,
            personalized=personal is not None,
            personalization_weight=weight if personal is not None else 0.0,
        )

    # -- explanation ----------------------------------------------------------
    @staticmethod
    def _terms(state: _IndexState, text: str) -> set[str]:
        if state.tokenizer is None:
            tokens = re.findall(r"(?u)\b\w\w+\b", text.lower())
            return set(tokens)
        stop = set(state.tokenizer.stopwords or ())
        return {t for t in state.tokenizer.splitter(text.lower()) if t not in stop}

    def _reasons(
        self,
        state: _IndexState,
        i: int,
        query_terms: set[str],
        semantic: bool,
        fuzzy: bool,
        personal: npt.NDArray[np.float64] | None,
        slot: int,
    ) -> tuple[str, ...]:
        item = state.catalog.item_at(i)
        reasons = []
        fields = (
            ("title", item.title),
            ("year", str(item.release_year or "")),
            ("genre", " ".join(item.genres)),
            ("overview", item.overview),
            ("people", " ".join(item.people)),
        )
        for name, text in fields:
            if text and query_terms & self._terms(state, text):
                reasons.append(name)
        if fuzzy and "title" not in reasons:
            reasons.append("fuzzy_title")
        if semantic:
            reasons.append("semantic")
        if personal is not None and personal[slot] > 0:
            reasons.append("personalized")
        return tuple(reasons)

    @staticmethod
    def _facets(state: _IndexState, items: npt.NDArray[np.int64]) -> Facets:
        arrays = state.arrays
        counts = np.count_nonzero(arrays.genre_onehot[items], axis=0)
        genres = {g: int(c) for g, c in zip(arrays.genres, counts, strict=True) if c > 0}
        years = arrays.years[items]
        years = years[~np.isnan(years)].astype(np.int64)
        if not years.size:
            return Facets(genres=genres, years={})
        first = int(years.min())
        ycounts = np.bincount(years - first)
        present = np.flatnonzero(ycounts)
        return Facets(genres=genres, years={first + int(y): int(ycounts[y]) for y in present})

    def __repr__(self) -> str:
        n = len(self.state_.catalog) if hasattr(self, "state_") else None
        return f"SearchIndex(config={self.config!r}, n_items={n})"
