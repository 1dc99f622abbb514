"""What a person reads in search results and recommendations: names, not ids; a documented score."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from serving._schemas import RecommendationItem
from serving.discovery import create_app
from sona import Catalog, ContentItem
from sona.search import CachedEmbedder, SearchConfig, SearchIndex, readable_people

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


class _CountingEmbedder:
    """A small deterministic Embedder (the protocol), recording which texts it had to encode."""

    dim = 8

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += list(texts)
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts]
        out = np.array(rows, dtype=np.float32).reshape(len(texts), self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_a_restarted_index_reuses_title_vectors_from_disk(tmp_path: Path) -> None:
    catalog = Catalog(
        [ContentItem(content_id=str(i), title=f"Title number {i}", genres=("Drama",)) for i in range(30)]
    )
    first = _CountingEmbedder()
    a = SearchIndex(CachedEmbedder(first, tmp_path, model_key="m1")).fit(catalog)
    assert len(first.encoded) == 30
    again = _CountingEmbedder()  # a new process: nothing in memory
    b = SearchIndex(CachedEmbedder(again, tmp_path, model_key="m1")).fit(catalog)
    assert again.encoded == []
    assert [h.content.content_id for h in a.search("title number 7").hits] == [
        h.content.content_id for h in b.search("title number 7").hits
    ]
    other_model = _CountingEmbedder()
    SearchIndex(CachedEmbedder(other_model, tmp_path, model_key="m2")).fit(catalog)
    assert len(other_model.encoded) == 30  # another model's vectors are never reused
    grown = Catalog([*catalog, ContentItem(content_id="new", title="A new title", genres=("Comedy",))])
    more = _CountingEmbedder()
    SearchIndex(CachedEmbedder(more, tmp_path, model_key="m1")).fit(grown)
    assert len(more.encoded) == 1
    cache = CachedEmbedder(_CountingEmbedder(), tmp_path, model_key="m1").path
    cache.write_bytes(b"not a numpy file")
    damaged = _CountingEmbedder()
    SearchIndex(CachedEmbedder(damaged, tmp_path, model_key="m1")).fit(catalog)
    assert len(damaged.encoded) == 30  # a damaged cache is ignored and rebuilt
