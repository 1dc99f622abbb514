"""Library behaviour of sona.search: filters, pagination, personalization, refresh, fusion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from sona import Catalog, ContentItem, NotFittedError, ValidationError
from sona.search import (
    GenreAffinityPersonalizer,
    MiniLMEmbedder,
    SearchConfig,
    SearchFilters,
    SearchIndex,
    weighted_rrf,
)

FAN = "horror-fan"  # conftest.synthetic gives this user 40 fully watched horror titles

QUERIES = ["night", "dark storm", "a story about the king", "golden river 1990", "x"]


def _all_hits(index: SearchIndex, query: str, **kw: object) -> list:
    first = index.search(query, page_size=100, **kw)  # type: ignore[arg-type]
    hits = list(first.hits)
    for page in range(2, first.total_count // 100 + 2):
        hits += index.search(query, page=page, page_size=100, **kw).hits  # type: ignore[arg-type]
    assert len(hits) == first.total_count
    return hits


@pytest.mark.parametrize("query", QUERIES)
def test_blocked_genres_never_appear(index: SearchIndex, query: str) -> None:
    blocked = ("Horror", "Drama")
    unfiltered = _all_hits(index, query)
    assert any(set(h.content.genres) & set(blocked) for h in unfiltered) or not unfiltered
    for user in (None, FAN):  # personalization for a horror fan must not resurrect horror titles
        hits = _all_hits(index, query, filters=SearchFilters(blocked_genres=blocked), user_id=user)
        assert not any(set(h.content.genres) & set(blocked) for h in hits)
        page = index.search(query, filters=SearchFilters(blocked_genres=blocked), user_id=user)
        assert not set(page.facets.genres) & set(blocked)


def test_genre_and_year_filters(index: SearchIndex) -> None:
    f = SearchFilters(genres=("Comedy", "War"), year_range=(1980, 1999))
    hits = _all_hits(index, "night", filters=f)
    assert hits
    for h in hits:
        assert set(h.content.genres) & {"Comedy", "War"}
        assert 1980 <= h.content.release_year <= 1999
    assert _all_hits(index, "night", filters=SearchFilters(genres=("NoSuchGenre",))) == []


def test_metadata_filters_rating_content_rating_platforms(embedder: MiniLMEmbedder) -> None:
    def item(i: int, **meta: object) -> ContentItem:
        return ContentItem(content_id=f"m{i}", title=f"Space voyage {i}", genres=("Sci-Fi",), metadata=meta)

    catalog = Catalog(
        [
            item(0, rating=8.1, content_rating="PG", platforms=["web", "tv"]),
            item(1, rating=6.0, content_rating="R", platforms=["tv"]),
            item(2, rating=9.0, content_rating="PG-13", platforms=["mobile"]),
            item(3),  # unrated, no platform, no rating
        ]
    )
    index = SearchIndex(embedder).fit(catalog)

    def ids(**f: object) -> set[str]:
        return {h.content.content_id for h in index.search("space voyage", filters=SearchFilters(**f)).hits}

    assert ids() == {"m0", "m1", "m2", "m3"}
    assert ids(rating_range=(7.0, 10.0)) == {"m0", "m2"}
    assert ids(content_rating_limit="PG-13") == {"m0", "m2"}  # unrated fails closed
    assert ids(content_rating_limit="G") == set()
    assert ids(platforms=["tv"]) == {"m0", "m1"}
    assert ids(year_range=(2000, 1990)) == set()  # reversed: valid, matches nothing
    with pytest.raises(ValidationError):
        SearchFilters(content_rating_limit="XXX")


def test_pagination_edges(index: SearchIndex) -> None:
    full = index.search("night", page_size=100)
    assert full.total_count > 20
    ids = [h.content.content_id for h in full.hits]
    pages = [index.search("night", page=p, page_size=7) for p in range(1, 5)]
    assert [h.content.content_id for pg in pages for h in pg.hits] == ids[:28]
    assert all(pg.total_count == full.total_count for pg in pages)
    last = (full.total_count - 1) // 7 + 1
    tail = index.search("night", page=last, page_size=7)
    assert 1 <= len(tail.hits) <= 7
    past = index.search("night", page=last + 1, page_size=7)
    assert past.hits == () and past.total_count == full.total_count and past.page == last + 1
    assert len(index.search("night", page_size=1).hits) == 1
    for bad in ({"page": 0}, {"page_size": 0}, {"page_size": 101}, {"page": -3}):
        with pytest.raises(ValidationError):
            index.search("night", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        index.search("   ")


def test_personalization_reorders_for_a_genre_fan_and_leaves_anonymous_alone(index: SearchIndex) -> None:
    anon_before = [h.content.content_id for h in index.search("night", page_size=50).hits]
    personal = index.search("night", page_size=50, user_id=FAN, experiment_variant="p60")
    anon_after = [h.content.content_id for h in index.search("night", page_size=50).hits]
    control = index.search("night", page_size=50, user_id=FAN, experiment_variant="control")

    assert personal.personalized and personal.personalization_weight == 0.60
    p_ids = [h.content.content_id for h in personal.hits]
    assert p_ids != anon_before
    assert anon_after == anon_before  # the anonymous order does not depend on who searched before
    assert [h.content.content_id for h in control.hits] == anon_before  # w = 0 is the anonymous order

    def horror_share(ids: list[str]) -> float:
        return float(np.mean(["Horror" in index.catalog[c].genres for c in ids[:10]]))

    assert horror_share(p_ids) > horror_share(anon_before)
    assert all(h.personalization_score is not None for h in personal.hits)
    assert all(h.personalization_score is None for h in index.search("night").hits)


def test_unknown_user_gets_the_anonymous_order(index: SearchIndex) -> None:
    anon = [h.content.content_id for h in index.search("storm").hits]
    page = index.search("storm", user_id="never-seen")
    assert not page.personalized and [h.content.content_id for h in page.hits] == anon
    with pytest.raises(ValidationError):
        index.search("storm", user_id=FAN, experiment_variant="no-such-arm")


TRICKY_TITLES = [
    "Robert'); DROP TABLE content; --",
    'The " OR 1=1 Heist',
    "<script>alert(1)</script> Live",
    "%' --",
]


@pytest.mark.parametrize("i", range(len(TRICKY_TITLES)))
def test_a_title_made_of_injection_text_is_found_by_its_exact_title(embedder: MiniLMEmbedder, i: int) -> None:
    plain = [
        ContentItem(content_id=f"p{n}", title=f"Ordinary film {n}", genres=("Drama",)) for n in range(30)
    ]
    tricky = [
        ContentItem(content_id=f"t{n}", title=t, genres=("Drama",)) for n, t in enumerate(TRICKY_TITLES)
    ]
    index = SearchIndex(embedder).fit(Catalog([*plain, *tricky]))
    page = index.search(TRICKY_TITLES[i])
    assert page.hits[0].content.content_id == f"t{i}"
    assert page.hits[0].content.title == TRICKY_TITLES[i]


def test_refresh_indexes_new_and_changed_titles(embedder: MiniLMEmbedder) -> None:
    items = [ContentItem(content_id=str(i), title=f"Ordinary film {i}", genres=("Drama",)) for i in range(5)]
    index = SearchIndex(embedder).fit(Catalog(items))
    assert index.search("zanzibar").total_count == 0 or all(
        "zanzibar" not in h.content.title.lower() for h in index.search("zanzibar").hits
    )
    changed = [
        *items[:4],
        dataclasses.replace(items[4], title="Zanzibar nights"),
        ContentItem("9", "Zanzibar"),
    ]
    index.refresh(Catalog(changed))
    top = index.search("zanzibar").hits
    assert {h.content.content_id for h in top[:2]} == {"4", "9"}
    assert "title" in top[0].match_reasons
    # re-used vectors equal freshly computed ones
    fresh = SearchIndex(embedder).fit(Catalog(changed))
    np.testing.assert_allclose(index.state_.vectors, fresh.state_.vectors, atol=1e-5)


def test_keyword_only_and_vector_only_configs(synthetic: tuple[Catalog, pd.DataFrame]) -> None:
    catalog = synthetic[0]
    kw = SearchIndex(None, SearchConfig(vector_weight=0.0)).fit(catalog)
    page = kw.search("golden river")
    assert page.hits and all(h.vector_similarity is None and h.keyword_score > 0 for h in page.hits)
    vec = SearchIndex(None, SearchConfig(keyword_weight=0.0))
    with pytest.raises(Exception, match="embedder"):
        vec.fit(catalog)
    with pytest.raises(NotFittedError):
        SearchIndex(None, SearchConfig(vector_weight=0.0)).search("x")


def test_weighted_rrf_matches_the_formula() -> None:
    a = np.array([3, 1, 2])
    b = np.array([1, 4])
    items, fused = weighted_rrf([a, b], [1.0, 0.5], k=60)
    expect = {3: 1 / 61, 1: 1 / 62 + 0.5 / 61, 2: 1 / 63, 4: 0.5 / 62}
    assert items.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(fused, [expect[i] for i in items.tolist()])


def test_genre_affinity_personalizer_scores_in_unit_interval(synthetic: tuple[Catalog, pd.DataFrame]) -> None:
    catalog, events = synthetic
    p = GenreAffinityPersonalizer().fit(events, catalog)
    s = p.score(FAN, list(catalog.ids) + ["not-a-title"])
    assert s.shape == (len(catalog) + 1,) and s.min() >= 0 and s.max() <= 1 and s[-1] == 0
    horror = np.array(["Horror" in it.genres for it in catalog])
    assert s[:-1][horror].mean() > s[:-1][~horror].mean()
    assert isinstance(events, pd.DataFrame)


def test_real_sona_engine_is_a_personalizer(
    embedder: MiniLMEmbedder, synthetic: tuple[Catalog, pd.DataFrame]
) -> None:
    from sona import Sona

    catalog, events = synthetic
    engine = Sona(catalog).fit(events)
    index = SearchIndex(embedder, personalizer=engine).fit(catalog)
    anon = [h.content.content_id for h in index.search("night", page_size=30).hits]
    mine = index.search("night", page_size=30, user_id=FAN, experiment_variant="p40")
    ids = [h.content.content_id for h in mine.hits]
    assert mine.personalized and ids != anon

    def horror_share(xs: list[str]) -> float:
        return float(np.mean(["Horror" in catalog[c].genres for c in xs[:10]]))

    assert horror_share(ids) > horror_share(anon)
