"""Issue 17: the fit's sampled softmax, its one-line progress report, and resuming a killed fit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sona
from sona.datasets import SyntheticConfig, generate_synthetic
from sona.evaluation import Pop, evaluate, temporal_split

ROOT = Path(__file__).resolve().parents[2]
SMALL = sona.SonaConfig(epochs=6, batch_size=64, dim=16, hidden_dim=32, progress=False, seed=3)


@pytest.fixture(scope="module")
def synthetic() -> tuple[sona.Catalog, pd.DataFrame, pd.DataFrame]:
    data = SyntheticConfig(n_items=400, n_users=300, events_per_user=30, seed=5)
    catalog, events = generate_synthetic(data)
    train, test = temporal_split(events, 0.2)
    return catalog, train, test


def test_sampled_softmax_learns_as_well_as_the_exact_one(synthetic) -> None:
    """A catalog larger than ``softmax_candidates`` trains on a sampled, log-Q corrected softmax."""
    catalog, train, test = synthetic
    tower_only = {"w_collaborative": 0.0, "w_content": 0.0, "w_genre": 0.0}
    exact = sona.Sona(catalog, SMALL).fit(train)
    sampled = sona.Sona(catalog, sona.SonaConfig(**{**_fields(SMALL), "softmax_candidates": 64})).fit(train)
    ndcg_exact = evaluate(exact.reweighted(**tower_only), test, 10)["ndcg"]
    ndcg_sampled = evaluate(sampled.reweighted(**tower_only), test, 10)["ndcg"]
    assert ndcg_sampled > 0.8 * ndcg_exact
    assert ndcg_sampled > 3 * 10 / len(catalog)  # far above a random ranking's hit rate
    assert evaluate(sampled, test, 10)["ndcg"] > evaluate(Pop(catalog).fit(train), test, 10)["ndcg"]


def _fields(cfg: sona.SonaConfig) -> dict[str, object]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


_FIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import time
    import sona
    import sona.models._base_model as base_model
    from sona.datasets import SyntheticConfig, generate_synthetic

    if len(sys.argv) > 4:  # a run the test kills: a pause after each checkpoint gives it a window to do so
        save = base_model._save_checkpoint
        def save_then_pause(path, state):
            save(path, state)
            time.sleep(float(sys.argv[4]))
        base_model._save_checkpoint = save_then_pause

    data = SyntheticConfig(n_items=300, n_users=300, events_per_user=30, seed=2)
    catalog, events = generate_synthetic(data)
    # 300 titles > 128 candidates: the sampled softmax, its row-wise optimizer state resumes too
    cfg = sona.SonaConfig(epochs=int(sys.argv[3]), batch_size=32, dim=16, hidden_dim=32, progress=True,
                          seed=4, softmax_candidates=128)
    engine = sona.Sona(catalog, cfg).fit(events, checkpoint_dir=sys.argv[1] or None)
    engine.save(sys.argv[2])
    """
)


def _fit_cmd(checkpoints: Path | str, out: Path, epochs: int, pause: float | None = None) -> list[str]:
    extra = [] if pause is None else [str(pause)]
    return [sys.executable, "-c", _FIT_SCRIPT, str(checkpoints), str(out), str(epochs), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_a_killed_fit_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    epochs = 12
    ckpt = tmp_path / "ckpt"
    # A fit this small runs all its epochs in well under a second on a quiet machine, so the killed
    # run pauses 3 s after each checkpoint: the kill lands between epochs however fast the machine.
    proc = subprocess.Popen(
        _fit_cmd(ckpt, tmp_path / "killed", epochs, pause=3.0), env=_env(), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (ckpt / "base_model.ckpt").exists():  # the first epoch is written: kill it now
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed").exists()

    resumed = subprocess.run(
        _fit_cmd(ckpt, tmp_path / "resumed", epochs), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    # not a TTY: one summary line instead of a progress bar, saying how many epochs were resumed
    (line,) = [x for x in resumed.stderr.splitlines() if x.startswith("sona fit:")]
    n_resumed = int(line.split("(")[1].split(" resumed")[0])
    assert 1 <= n_resumed < epochs, line
    assert "\r" not in resumed.stderr

    ns: dict[str, object] = {}
    old_argv = sys.argv
    sys.argv = ["fit", "", str(tmp_path / "whole"), str(epochs)]
    try:  # the uninterrupted run, in this process (same torch build, one training thread)
        exec(_FIT_SCRIPT, ns)
    finally:
        sys.argv = old_argv
    a, b = sona.Sona.load(tmp_path / "resumed"), sona.Sona.load(tmp_path / "whole")
    np.testing.assert_allclose(a.content_embeddings_, b.content_embeddings_, rtol=1e-4, atol=1e-5)
    users = [str(u) for u in b.users_[:20]]
    ra, rb = a.recommend_batch(users, k=10), b.recommend_batch(users, k=10)
    assert (ra["content_id"].to_numpy() == rb["content_id"].to_numpy()).mean() > 0.95


def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path: Path, synthetic) -> None:
    catalog, train, _ = synthetic
    cfg = sona.SonaConfig(**{**_fields(SMALL), "epochs": 2})
    sona.Sona(catalog, cfg).fit(train, checkpoint_dir=tmp_path)
    assert (tmp_path / "base_model.ckpt").exists()
    fresh = sona.Sona(catalog, cfg).fit(train.iloc[: len(train) // 2])
    other = sona.Sona(catalog, cfg).fit(train.iloc[: len(train) // 2], checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(fresh.content_embeddings_, other.content_embeddings_)


def test_max_steps_caps_the_epochs_of_a_large_dataset(synthetic, capsys: pytest.CaptureFixture[str]) -> None:
    """``max_steps`` turns epochs into a step budget: 300 users in batches of 64 are 5 steps an
    epoch, so a budget of 12 steps trains 2 of the 6 epochs; no budget trains all 6."""
    catalog, train, _ = synthetic
    loud = {**_fields(SMALL), "progress": True}
    sona.Sona(catalog, sona.SonaConfig(**{**loud, "max_steps": 12})).fit(train)
    capped = capsys.readouterr().err
    sona.Sona(catalog, sona.SonaConfig(**{**loud, "max_steps": None})).fit(train)
    full = capsys.readouterr().err
    assert "sona fit: 2 epochs" in capped, capped
    assert "sona fit: 6 epochs" in full, full
    with pytest.raises(sona.errors.ConfigError, match="max_steps"):
        sona.SonaConfig(max_steps=0)
