"""What a person reads in search results and recommendations: names, not ids; a documented score."""

from __future__ import annotations

from fastapi.testclient import TestClient

from serving._schemas import RecommendationItem
from serving.discovery import create_app
from sona import Catalog, ContentItem
from sona.search import SearchConfig, SearchIndex, readable_people

SECRET = "search-results-secret-0123456789"


def test_people_are_names_and_knowledge_graph_ids_are_left_out() -> None:
    catalog = Catalog(
        [
            ContentItem(
                content_id="1",
                title="The Piano",
                genres=("Drama",),
                release_year=1993,
                people=("m.01cd39", "Jane Campion", "g.11b6z", "Holly Hunter", "nm0000123"),
            ),
            ContentItem(content_id="2", title="Toy Story", genres=("Animation",), people=("m.0bln8",)),
        ]
    )
    client = TestClient(
        create_app(SearchIndex(config=SearchConfig(vector_weight=0.0)).fit(catalog), jwt_secret=SECRET)
    )
    r = client.post("/api/v1/search", json={"query": "piano"})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]["content"]
    assert top["id"] == "1" and top["people"] == ["Jane Campion", "Holly Hunter"]
    toy = client.post("/api/v1/search", json={"query": "toy story"}).json()["results"][0]["content"]
    assert toy["people"] == []
    assert readable_people([" ", "M.0ABC", "Q42", "Quentin Tarantino", "Mr. T"]) == (
        "Quentin Tarantino",
        "Mr. T",
    )


def test_confidence_score_is_documented_as_a_calibrated_probability() -> None:
    doc = RecommendationItem.model_json_schema()["properties"]["confidence_score"]["description"]
    assert "Calibrated probability" in doc and "typical" in doc
