"""Every notebook in notebooks/ runs top to bottom, and every plotting cell shows its plot.

This is the only place ``make test`` executes the notebooks (once each). The
executed copies, images included, are written to ``$SONA_ARTIFACTS_DIR/notebooks``
(CI uploads that directory) or ``build/notebooks`` so a person can open them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.integration.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: a cell that draws: a pyplot/Axes call, or pandas' .plot accessor
_PLOTS = re.compile(r"\bplt\.|\.plot\b|\.plot\.|\bax\d?\.")


def _artifacts_dir() -> Path:
    root = os.environ.get("SONA_ARTIFACTS_DIR")
    out = (Path(root) if root else ROOT / "build") / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return str(output.get("text", ""))
    return "\n".join(str(v) for v in output.get("data", {}).values() if isinstance(v, str))


def test_there_are_notebooks() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"00_first_look.ipynb", "01_quickstart.ipynb"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_its_plots(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    env_cwd = path.parent
    client = NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(env_cwd)}}
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, _artifacts_dir() / path.name)  # also when a cell failed: the error is in it
    code = [c for c in nb.cells if c.cell_type == "code"]
    plotting = [c for c in code if _PLOTS.search(c.source)]
    assert plotting, f"{path.name} draws nothing"
    for cell in plotting:
        kinds = {k for o in cell.outputs for k in o.get("data", {})}
        assert "image/png" in kinds, f"{path.name}: no image from cell\n{cell.source[:300]}"
    noise = [
        _text(o) for c in code for o in c.outputs if "TqdmWarning" in _text(o) or "IProgress" in _text(o)
    ]
    assert not noise, noise
