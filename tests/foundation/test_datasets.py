"""MovieLens loading, in both layouts, and its failure modes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import sona
from sona.datasets import SyntheticConfig, generate_synthetic, load_movielens


@pytest.mark.movielens
def test_movielens_recbole_counts(movielens_path: Path) -> None:
    catalog, events = load_movielens(movielens_path)
    assert len(catalog) == 1682
    assert events["user_id"].nunique() == 943
    assert len(events) == 100_000
    assert list(events.columns) == list(sona.EVENT_COLUMNS)
    assert events["user_id"].map(type).eq(str).all()
    assert (events["completion_rate"] == 1.0).all()
    assert events["rating"].between(1, 5).all()
    assert str(events["timestamp"].dt.tz) == "UTC"
    assert catalog["1"].title == "Toy Story"
    assert set(catalog["1"].genres) == {"Animation", "Children's", "Comedy"}
    assert catalog["1"].release_year == 1995
    # The knowledge graph links most titles to people (actors, directors, ...).
    assert sum(bool(item.people) for item in catalog) > 1500
    assert events["event_id"].is_unique


def _write_grouplens(dest: Path, data_lines: list[str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "u.data").write_text("".join(data_lines))
    genres = "|".join(["0"] * 19)
    (dest / "u.item").write_text(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{genres}\n"
        f"2|GoldenEye (1995)|01-Jan-1995||http://x|{genres}\n",
        encoding="latin-1",
    )


def test_grouplens_layout(tmp_path: Path) -> None:
    _write_grouplens(tmp_path, ["1\t1\t5\t881250949\n", "1\t2\t3\t881250950\n", "2\t1\t4\t881250951\n"])
    catalog, events = load_movielens(tmp_path)
    assert len(catalog) == 2 and catalog["1"].title == "Toy Story" and catalog["1"].release_year == 1995
    assert len(events) == 3 and set(events["user_id"]) == {"1", "2"}


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(sona.DatasetFormatError, match="not a directory"):
        load_movielens(tmp_path / "nope")


def test_missing_item_file(tmp_path: Path) -> None:
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    with pytest.raises(sona.DatasetFormatError, match=r"\*\.item"):
        load_movielens(tmp_path)


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    _write_grouplens(tmp_path, ["1\t1\t5\t881250949\n", "1\t2\t3\n"])
    with pytest.raises(sona.DatasetFormatError) as err:
        load_movielens(tmp_path)
    assert err.value.line == 2 and err.value.path.endswith("u.data")


def test_rating_out_of_range(tmp_path: Path) -> None:
    _write_grouplens(tmp_path, ["1\t1\t7\t881250949\n"])
    with pytest.raises(sona.DatasetFormatError, match=r"rating 7"):
        load_movielens(tmp_path)


@pytest.mark.movielens
def test_recbole_malformed_copy(movielens_path: Path, tmp_path: Path) -> None:
    for f in movielens_path.iterdir():
        shutil.copy(f, tmp_path / f.name)
    inter = tmp_path / "ml-100k.inter"
    lines = inter.read_text().splitlines(keepends=True)
    lines[5] = "196\t242\tnot-a-number\t881250949\n"
    inter.write_text("".join(lines))
    with pytest.raises(sona.DatasetFormatError) as err:
        load_movielens(tmp_path)
    assert err.value.line == 6


def test_synthetic_is_seeded_and_realistic() -> None:
    cfg = SyntheticConfig(n_items=300, n_users=200, events_per_user=30, seed=7)
    c1, e1 = generate_synthetic(cfg)
    c2, e2 = generate_synthetic(cfg)
    pd.testing.assert_frame_equal(e1, e2)
    assert len(c1) == 300 and e1["user_id"].nunique() > 190
    validated = sona.validate_events(e1)
    assert len(validated) == len(e1)
    assert 0.05 < e1["dismissed"].mean() < 0.5
    hours = e1["timestamp"].dt.hour
    assert (hours >= 18).mean() > (hours < 6).mean() * 2  # evenings dominate nights
    assert generate_synthetic(SyntheticConfig(n_items=300, n_users=200, seed=8))[1][
        "content_id"
    ].tolist() != (e1["content_id"].tolist())
