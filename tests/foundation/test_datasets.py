"""MovieLens loading, in both layouts, and its failure modes."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest

import sona
from sona.datasets import DatasetWarning, SyntheticConfig, generate_synthetic, load_movielens
from sona.features import content_features


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
    with pytest.raises(sona.DatasetFormatError, match=r"rating 7 outside \(0, 5\]"):
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


# -- ml-1m / ml-10m (``::``) and ml-latest / ml-20m / ml-25m (CSV) layouts -----------------


def _write_dat(dest: Path, *, tags: bool) -> None:
    """A tiny ml-1m (``tags=False``, whole stars, Latin-1) or ml-10m (half stars, tags) copy."""
    dest.mkdir(parents=True, exist_ok=True)
    stars = ("5", "3", "4") if not tags else ("4.5", "0.5", "3.5")
    (dest / "ratings.dat").write_text(
        f"1::1::{stars[0]}::978300760\n1::3::{stars[1]}::978302109\n2::1::{stars[2]}::978301968\n"
    )
    (dest / "movies.dat").write_text(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Misérables, Les (1995)::Drama|Musical\n"
        "3::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n",
        encoding="utf-8" if tags else "latin-1",
    )
    (dest / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    if tags:
        (dest / "tags.dat").write_text(
            "1::1::Pixar::1139045764\n2::1::pixar ::1139045765\n2::3::space::opera::1139045766\n"
        )


def test_ml1m_dat_layout(tmp_path: Path) -> None:
    _write_dat(tmp_path, tags=False)
    catalog, events = load_movielens(tmp_path)
    assert len(catalog) == 3 and len(events) == 3 and events["user_id"].nunique() == 2
    assert catalog["2"].title == "Misérables, Les" and catalog["2"].release_year == 1995
    assert catalog["3"].title == "Star Wars: Episode IV - A New Hope"
    assert catalog["1"].genres == ("Animation", "Children's", "Comedy")
    assert sorted(events["rating"]) == [3.0, 4.0, 5.0]
    assert catalog["1"].popularity == 2.0 and catalog["2"].popularity == 0.0


def test_ml10m_dat_layout_with_half_stars_and_tags(tmp_path: Path) -> None:
    _write_dat(tmp_path, tags=True)
    catalog, events = load_movielens(tmp_path)
    assert len(catalog) == 3 and len(events) == 3
    assert sorted(events["rating"]) == [0.5, 3.5, 4.5]
    assert catalog["1"].metadata["tags"] == ["pixar"]  # case and spacing folded, counted once
    assert catalog["3"].metadata["tags"] == ["space::opera"]  # a tag may hold the separator
    assert "tags" not in catalog["2"].metadata


def _write_csv(dest: Path, ratings: str, *, tags: bool = True) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + ratings)
    (dest / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "176601,Black Mirror,(no genres listed)\n"
        '140956,"Ready Player One",Action|Sci-Fi|Thriller\n'
        "171749,Death Note: Desu nôto (2006–2007),(no genres listed)\n"
    )
    if tags:
        (dest / "tags.csv").write_text(
            "userId,movieId,tag,timestamp\n"
            '2,1,pixar,1445714994\n3,11,"politics, romance",1445714996\n'
            "4,1,Pixar,1445714997\n4,1,fun,1445714998\n"
        )


_CSV_RATINGS = "1,1,4.0,964982703\n1,11,0.5,964981247\n2,1,3.5,964982224\n2,176601,5.0,964983815\n"


def test_csv_layout_counts_titles_genres_and_tags(tmp_path: Path) -> None:
    _write_csv(tmp_path, _CSV_RATINGS)
    catalog, events = load_movielens(tmp_path)
    assert len(catalog) == 5 and len(events) == 4 and events["user_id"].nunique() == 2
    assert sorted(events["rating"]) == [0.5, 3.5, 4.0, 5.0]
    assert (catalog["11"].title, catalog["11"].release_year) == ("American President, The", 1995)
    assert (catalog["176601"].title, catalog["176601"].genres) == ("Black Mirror", ())
    assert catalog["176601"].release_year is None and catalog["140956"].title == "Ready Player One"
    assert (catalog["171749"].title, catalog["171749"].release_year) == ("Death Note: Desu nôto", 2006)
    assert catalog["1"].metadata["tags"] == ["pixar", "fun"]  # most applied first
    assert catalog["11"].metadata["tags"] == ["politics, romance"]
    assert catalog["1"].popularity == 2.0


def test_csv_tags_are_optional(tmp_path: Path) -> None:
    _write_csv(tmp_path, _CSV_RATINGS, tags=False)
    catalog, events = load_movielens(tmp_path)
    assert len(events) == 4 and all("tags" not in item.metadata for item in catalog)


def test_tags_become_content_features(tmp_path: Path) -> None:
    _write_csv(tmp_path, _CSV_RATINGS)
    catalog, _ = load_movielens(tmp_path)
    (dest := tmp_path / "untagged").mkdir()
    _write_csv(dest, _CSV_RATINGS, tags=False)
    untagged, _ = load_movielens(dest)
    tagged_features = content_features(catalog, tag_min_count=1)
    plain = content_features(untagged, tag_min_count=1)
    assert tagged_features.shape[1] == plain.shape[1] + 3  # pixar, fun, "politics, romance"
    rows = catalog.index_of(["1", "11"])
    assert tagged_features[rows].nnz > plain[rows].nnz


def test_ratings_of_unknown_titles_are_dropped_with_a_warning(tmp_path: Path) -> None:
    _write_csv(tmp_path, _CSV_RATINGS + "999,999999,5.0,1493846415")  # no final newline either
    with pytest.warns(DatasetWarning, match=r"ratings\.csv:6: dropped 1 rating"):
        catalog, events = load_movielens(tmp_path)
    assert len(events) == 4 and "999" not in set(events["user_id"])


@pytest.mark.parametrize(
    ("line", "where", "message"),
    [
        ("1,1,4.0\n", 3, "expected 4 fields, got 3"),
        ("1,1,4.0,964982703,9\n", 3, "expected 4 fields, got 5"),
        ("1,1,four,964982703\n", 3, "'rating' is not numeric"),
        ("1,x1,4.0,964982703\n", 3, "'item_id' is not an integer"),
        ("\n", 3, "expected 4 fields, got 0"),
        ("1,1,0,964982703\n", 3, r"rating 0 outside \(0, 5\]"),
        ("1,1,5.5,964982703\n", 3, r"rating 5.5 outside \(0, 5\]"),
        ("1,1,-1,964982703\n", 3, r"rating -1 outside \(0, 5\]"),
    ],
)
def test_csv_malformed_line_names_file_and_line(tmp_path: Path, line: str, where: int, message: str) -> None:
    _write_csv(tmp_path, "1,1,4.0,964982703\n" + line + "2,1,3.5,964982224\n")
    with pytest.raises(sona.DatasetFormatError, match=message) as err:
        load_movielens(tmp_path)
    assert err.value.line == where and err.value.path.endswith("ratings.csv")


@pytest.mark.parametrize(
    ("line", "message"),
    [("1::1::5\n", "expected 4 fields, got 3"), ("1:1::5::978300760\n", "expected 4 fields, got 3")],
)
def test_dat_malformed_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    _write_dat(tmp_path, tags=False)
    with open(tmp_path / "ratings.dat", "a") as fh:
        fh.write(line)
    with pytest.raises(sona.DatasetFormatError, match=message) as err:
        load_movielens(tmp_path)
    assert err.value.line == 4 and err.value.path.endswith("ratings.dat")


def test_csv_missing_column_and_movies_file(tmp_path: Path) -> None:
    _write_csv(tmp_path, _CSV_RATINGS)
    (tmp_path / "ratings.csv").write_text("userId,itemId,rating,timestamp\n1,1,4.0,964982703\n")
    with pytest.raises(sona.DatasetFormatError, match="missing column 'movieId'"):
        load_movielens(tmp_path)
    (tmp_path / "movies.csv").unlink()
    with pytest.raises(sona.DatasetFormatError, match="movies.csv: file not found"):
        load_movielens(tmp_path)


@pytest.mark.movielens
def test_movielens_latest_small_counts(movielens_latest_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)  # a rating of a title missing from movies.csv
        catalog, events = load_movielens(movielens_latest_path)
    assert len(catalog) == 9742 and events["user_id"].nunique() == 610 and len(events) == 100_836
    assert list(events.columns) == list(sona.EVENT_COLUMNS)
    assert sorted(events["rating"].unique()) == [x / 2 for x in range(1, 11)]
    assert (catalog["1"].title, catalog["1"].release_year) == ("Toy Story", 1995)
    assert "pixar" in catalog["1"].metadata["tags"]
    assert sum(bool(item.metadata.get("tags")) for item in catalog) > 1500
    assert events["event_id"].is_unique
