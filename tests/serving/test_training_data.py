"""Where the demo engine's training data comes from: SONA_MOVIELENS, read through Settings."""

from __future__ import annotations

from pathlib import Path

from sona_app.datasource import find_movielens
from sona_app.settings import load_settings


def test_sona_movielens_points_at_the_dataset(tmp_path: Path) -> None:
    data = tmp_path / "my-ml"
    data.mkdir()
    (data / "ml-100k.inter").write_text("user_id:token\titem_id:token\n")
    settings = load_settings({"SONA_DATA_DIR": str(tmp_path / "d"), "SONA_MOVIELENS": str(data)})
    assert settings.movielens_dir == data
    assert find_movielens(settings) == data


def test_a_directory_without_the_dataset_is_not_used(tmp_path: Path) -> None:
    settings = load_settings({"SONA_DATA_DIR": str(tmp_path / "d"), "SONA_MOVIELENS": str(tmp_path)})
    found = find_movielens(settings)
    assert found != tmp_path  # falls through to the shared copy, if any
