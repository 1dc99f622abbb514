"""Numbers a person reads agree with each other: the adapter bar's last frame and the summary line,
and a rejected training's two scores."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from serving._state import _compare_scores
from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic
from sona_app.adapter_run import RunCheckpoint, run_adapter_training


def test_progress_bar_ends_at_the_summary_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog, events = generate_synthetic(
        SyntheticConfig(n_items=60, n_users=24, events_per_user=20.0, seed=5)
    )
    engine = Sona(catalog, SonaConfig(epochs=1, dim=8, hidden_dim=16, progress=False)).fit(events)
    users = sorted(map(str, engine.users_))
    report = run_adapter_training(
        engine,
        users,
        checkpoint=RunCheckpoint(tmp_path, "bar"),
        chunk_size=12,
        progress=True,  # two chunks: the bar is redrawn
    )
    frames = re.findall(r"failed=(\d+), trained=(\d+)", capsys.readouterr().err)
    assert frames, "no progress bar was drawn"
    assert frames[-1] == (str(report.failed), str(report.trained))
    assert f"trained={report.trained} " in report.summary_line()


@pytest.mark.parametrize(
    ("tuned", "base", "expected"),
    [
        (0.6351, 0.6351, "ties"),
        (0.635102, 0.635104, "0.635102 does not beat the base model's 0.635104"),
        (0.5, 0.6, "0.5000 does not beat the base model's 0.6000"),
    ],
)
def test_rejected_training_message_never_shows_two_equal_numbers(
    tuned: float, base: float, expected: str
) -> None:
    message = _compare_scores(tuned, base)
    assert expected in message
    numbers = re.findall(r"\d+\.\d+", message)
    assert len(set(numbers)) == len(numbers)
