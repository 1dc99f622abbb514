"""Saving and loading an engine: typed failures, damaged copies refused, the catalog kept exactly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sona

SMALL = sona.SonaConfig(epochs=1, batch_size=64, dim=8, hidden_dim=16, progress=False, seed=3)
FILES = ("engine.json", "catalog.json", "history.npz", "model.npz", "scorer.pt")


def _catalog() -> sona.Catalog:
    return sona.Catalog(
        sona.ContentItem(
            f"0{j}",
            f"Title {j}",
            genres=("Drama",) if j % 2 else ("Comedy", "Drama"),
            release_year=None if j % 3 == 0 else 1990 + j,
            popularity=math.pi * j / 7 + 1e-13,
            metadata={"rating": 7.123456789012345 + j, "platforms": ["tv", "web"], "kids": j % 2 == 0},
        )
        for j in range(12)
    )


def _events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [f"u{i % 4}" for i in range(40)],
            "content_id": [f"0{i % 12}" for i in range(40)],
            "timestamp": pd.date_range("2026-01-01", periods=40, freq="h", tz="UTC"),
            "completion_rate": 0.9,
        }
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    engine = sona.Sona(_catalog(), SMALL).fit(_events())
    return engine.save(tmp_path_factory.mktemp("persist") / "model")


def test_catalog_metadata_and_floats_round_trip_exactly(saved: Path) -> None:
    loaded = sona.Sona.load(saved).catalog
    assert list(loaded) == list(_catalog())
    assert [it.popularity for it in loaded] == [it.popularity for it in _catalog()]
    assert loaded["01"].metadata == {"rating": 8.123456789012345, "platforms": ["tv", "web"], "kids": False}


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("keep", [0.0, 0.5, 0.9])
def test_damaged_file_raises_storage_error_naming_it(
    saved: Path, tmp_path: Path, name: str, keep: float
) -> None:
    broken = _copy(saved, tmp_path / "broken")
    data = (saved / name).read_bytes()
    (broken / name).write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(sona.StorageError, match=name.replace(".", r"\.")):
        sona.Sona.load(broken)


def _edit_meta(directory: Path, edit: str) -> None:
    meta = json.loads((directory / "engine.json").read_text())
    if edit == "short users":
        meta["users"] = meta["users"][:-1]
    elif edit == "tower shape":
        meta["tower"]["hidden_dim"] += 1
    (directory / "engine.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("edit", ["short users", "tower shape"])
def test_inconsistent_files_raise_storage_error(saved: Path, tmp_path: Path, edit: str) -> None:
    broken = _copy(saved, tmp_path / "broken")
    _edit_meta(broken, edit)
    with pytest.raises(sona.StorageError, match="cannot load"):
        sona.Sona.load(broken)


def test_a_setting_a_later_release_dropped_does_not_stop_loading(
    saved: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    older = _copy(saved, tmp_path / "older")
    meta = json.loads((older / "engine.json").read_text())
    meta["config"]["dense_collab_max_items"] = 5000  # a setting of an earlier release
    (older / "engine.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="sona.engine"):
        loaded = sona.Sona.load(older)
    assert "dense_collab_max_items" in caplog.text
    assert loaded.config == sona.Sona.load(saved).config
    assert loaded.recommend(loaded.users_[0], k=3)


def test_missing_npz_member_raises_storage_error(saved: Path, tmp_path: Path) -> None:
    broken = _copy(saved, tmp_path / "broken")
    with np.load(saved / "history.npz") as hist:
        members = {k: hist[k] for k in hist.files if k != "rating"}
    np.savez(broken / "history.npz", **members)
    with pytest.raises(sona.StorageError, match="history.npz"):
        sona.Sona.load(broken)


def test_save_under_a_file_raises_storage_error(saved: Path, tmp_path: Path) -> None:
    engine = sona.Sona.load(saved)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(sona.StorageError, match="could not save"):
        engine.save(blocker / "model")
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


def test_save_replaces_an_existing_copy_and_leaves_nothing_behind(saved: Path, tmp_path: Path) -> None:
    engine = sona.Sona.load(saved)
    target = engine.save(tmp_path / "model")
    engine.observe(_events().assign(user_id="late", timestamp=pd.Timestamp("2026-03-01", tz="UTC")))
    assert engine.save(target) == target
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert sona.Sona.load(target).known_user("late")


def test_cli_fit_into_an_impossible_directory_fails_without_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SONA_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sona_app.cli",
            "fit",
            "--data",
            "synthetic:20x30",
            "--epochs",
            "1",
            "--model-dir",
            str(blocker / "x"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "could not save" in result.stderr + result.stdout


def test_numpy_and_date_metadata_is_saved_as_json_values(tmp_path: Path) -> None:
    items = [
        sona.ContentItem("a", "A", metadata={"score": np.float32(7.5), "views": np.int64(3)}),
        sona.ContentItem("b", "B", metadata={"added": date(2026, 1, 2)}),
        sona.ContentItem("c", "C"),
    ]
    events = _events().assign(content_id=[("a", "b", "c")[i % 3] for i in range(40)])
    path = sona.Sona(sona.Catalog(items), SMALL).fit(events).save(tmp_path / "model")
    loaded = sona.Sona.load(path).catalog
    assert loaded["a"].metadata == {"score": 7.5, "views": 3}
    assert loaded["b"].metadata == {"added": "2026-01-02"}


def test_transitions_saved_in_part_raise_storage_error(saved: Path, tmp_path: Path) -> None:
    broken = _copy(saved, tmp_path / "broken")
    with np.load(saved / "model.npz") as npz:
        assert {"transitions_data", "transitions_indices", "transitions_indptr"} <= set(npz.files)
        members = {k: npz[k] for k in npz.files if k != "transitions_indptr"}
    np.savez(broken / "model.npz", **members)
    with pytest.raises(sona.StorageError, match=r"model\.npz.*transitions"):
        sona.Sona.load(broken)
