"""Typo tolerance (title trigrams), the query-vector cache, the fast query encoder and HNSW."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from sona import Catalog, ConfigError, ContentItem
from sona.search import (
    MiniLMEmbedder,
    QueryVectorCache,
    SearchConfig,
    SearchFilters,
    SearchIndex,
    char_trigrams,
    hnswlib_available,
)

TITLES = [
    ("Shawshank Redemption, The", ("Drama",)),
    ("Godfather, The", ("Crime", "Drama")),
    ("Silence of the Lambs, The", ("Thriller",)),
    ("Raiders of the Lost Ark", ("Action", "Adventure")),
    ("Terminator 2: Judgment Day", ("Action", "Sci-Fi")),
    ("Casablanca", ("Romance", "Drama")),
    ("Forrest Gump", ("Comedy", "Drama")),
    ("Jurassic Park", ("Adventure", "Sci-Fi")),
    ("Pulp Fiction", ("Crime",)),
    ("Redemption Road", ("Drama",)),
    ("Shadow Kingdom", ("Fantasy",)),
    ("Lambs in Spring", ("Children's",)),
]


@pytest.fixture(scope="module")
def films() -> Catalog:
    return Catalog([ContentItem(content_id=f"f{i}", title=t, genres=g) for i, (t, g) in enumerate(TITLES)])


@pytest.fixture(scope="module")
def films_index(embedder: MiniLMEmbedder, films: Catalog) -> SearchIndex:
    return SearchIndex(embedder).fit(films)


def test_char_trigrams_are_padded_per_word() -> None:
    assert char_trigrams("Star Wars") == ["#st", "sta", "tar", "ar#", "#wa", "war", "ars", "rs#"]
    assert char_trigrams("  ") == []


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("shawshnak redemption", "Shawshank Redemption, The"),
        ("silense of the lambs", "Silence of the Lambs, The"),
        ("jurasic park", "Jurassic Park"),
        ("godfahter", "Godfather, The"),
    ],
)
def test_a_misspelled_title_is_found_first(films_index: SearchIndex, query: str, title: str) -> None:
    top = films_index.search(query).hits[0]
    assert top.content.title == title
    assert "fuzzy_title" in top.match_reasons or "title" in top.match_reasons


def test_the_trigram_signal_is_what_fixes_typos(embedder: MiniLMEmbedder, films: Catalog) -> None:
    # Word BM25 alone has nothing to match in "shawshnak"; only the trigram ranking can rank the title.
    words = SearchIndex(None, SearchConfig(vector_weight=0.0, trigram_weight=0.0)).fit(films)
    fuzzy = SearchIndex(None, SearchConfig(vector_weight=0.0)).fit(films)
    assert "Shawshank" not in " ".join(h.content.title for h in words.search("shawshnak").hits)
    assert fuzzy.search("shawshnak").hits[0].content.title == "Shawshank Redemption, The"


def test_queries_of_known_words_are_not_touched_by_trigrams(
    embedder: MiniLMEmbedder, films: Catalog, films_index: SearchIndex
) -> None:
    plain = SearchIndex(embedder, SearchConfig(trigram_weight=0.0)).fit(films, films_index.state_.vectors)
    for query in ("redemption", "lost ark", "crime drama"):
        a = [(h.content.content_id, round(h.relevance_score, 9)) for h in films_index.search(query).hits]
        b = [(h.content.content_id, round(h.relevance_score, 9)) for h in plain.search(query).hits]
        assert a == b
        assert all("fuzzy_title" not in h.match_reasons for h in films_index.search(query).hits)


def test_typo_search_still_respects_filters(films_index: SearchIndex) -> None:
    page = films_index.search("jurasic park", filters=SearchFilters(blocked_genres=("Sci-Fi",)))
    assert all("Sci-Fi" not in h.content.genres for h in page.hits)


def test_repeated_query_is_served_from_the_vector_cache(embedder: MiniLMEmbedder, films: Catalog) -> None:
    index = SearchIndex(embedder).fit(films)
    first = index.search("a prison escape drama")
    assert (index.query_cache_.hits, index.query_cache_.misses) == (0, 1)
    second = index.search("a prison escape drama", page_size=5)
    assert (index.query_cache_.hits, index.query_cache_.misses) == (1, 1)
    assert [h.content.content_id for h in second.hits] == [h.content.content_id for h in first.hits[:5]]
    off = SearchIndex(embedder, SearchConfig(query_cache_size=0)).fit(films, index.state_.vectors)
    off.search("a prison escape drama")
    off.search("a prison escape drama")
    assert len(off.query_cache_) == 0 and off.query_cache_.hits == 0


def test_query_vector_cache_is_lru_and_read_only(embedder: MiniLMEmbedder) -> None:
    cache = QueryVectorCache(maxsize=2)
    a = cache.get(embedder, "alpha")
    cache.get(embedder, "beta")
    cache.get(embedder, "alpha")  # alpha is now the most recent
    cache.get(embedder, "gamma")  # evicts beta
    assert len(cache) == 2 and cache.hits == 1
    cache.get(embedder, "beta")
    assert cache.misses == 4
    with pytest.raises(ValueError):
        a[0] = 1.0
    with pytest.raises(ConfigError):
        QueryVectorCache(maxsize=-1)


def test_fast_query_encoder_matches_sentence_transformers(embedder: MiniLMEmbedder) -> None:
    for text in ("star wars", "a long, winding query about the mafia in new york 1972"):
        np.testing.assert_allclose(embedder.encode_query(text), embedder.encode([text])[0], atol=1e-5)
    long = " ".join(["word"] * 400)  # truncated to query_max_tokens, not an error
    assert embedder.encode_query(long).shape == (embedder.dim,)


@pytest.mark.parametrize(
    "change",
    [
        {"trigram_weight": -1.0},
        {"keyword_weight": 0.0, "vector_weight": 0.0, "trigram_weight": 0.0},
        {"query_cache_size": -1},
        {"ann": "faiss"},
        {"ann_min_items": 0},
        {"hnsw_ef_search": 0},
    ],
)
def test_bad_search_config_is_a_config_error(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(SearchConfig(), **change)  # type: ignore[arg-type]


needs_hnswlib = pytest.mark.skipif(not hnswlib_available(), reason="hnswlib is not installed")


@needs_hnswlib
def test_hnsw_agrees_with_exact_search_and_keeps_filters(
    embedder: MiniLMEmbedder, synthetic: tuple[Catalog, pd.DataFrame], index: SearchIndex
) -> None:
    catalog = synthetic[0]
    ann = SearchIndex(embedder, SearchConfig(ann="hnsw")).fit(catalog, index.state_.vectors)
    exact = SearchIndex(embedder, SearchConfig(ann="exact")).fit(catalog, index.state_.vectors)
    assert ann.state_.vector_search.approximate and not exact.state_.vector_search.approximate
    for query in ("night", "a story about the king", "golden river 1990"):
        a = [h.content.content_id for h in ann.search(query, page_size=10).hits]
        b = [h.content.content_id for h in exact.search(query, page_size=10).hits]
        assert len(set(a) & set(b)) >= 9
    horror = sum("Horror" in it.genres for it in catalog)
    assert 0 < horror <= 0.25 * len(catalog) < len(catalog) - horror  # so both HNSW paths below run
    query = "a frightening night"
    broad = SearchFilters(blocked_genres=("Horror",))  # graph, then mask
    got, want = (
        ann.search(query, filters=broad, page_size=100),
        exact.search(query, filters=broad, page_size=100),
    )
    assert all("Horror" not in h.content.genres for h in got.hits)
    assert abs(got.total_count - want.total_count) <= 2
    selective = SearchFilters(genres=("Horror",))  # exact scan of the few passing titles
    got, want = ann.search(query, filters=selective), exact.search(query, filters=selective)
    assert [h.content.content_id for h in got.hits] == [h.content.content_id for h in want.hits]
    assert got.hits and all("Horror" in h.content.genres for h in got.hits)
    assert ann.search(query, filters=SearchFilters(genres=("No such genre",))).total_count == 0


def test_auto_uses_exact_search_below_the_threshold(
    embedder: MiniLMEmbedder, synthetic: tuple[Catalog, pd.DataFrame], index: SearchIndex
) -> None:
    auto = SearchIndex(embedder, SearchConfig(ann="auto", ann_min_items=10_000))
    auto.fit(synthetic[0], index.state_.vectors)
    assert not auto.state_.vector_search.approximate
