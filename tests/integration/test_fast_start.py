"""Start-up cost: `import sona` and loading a dataset do not load torch, and `sona --help` answers fast.

Each check runs in a fresh interpreter (the test process has long imported
torch). The time limit is generous so a loaded CI machine does not flake;
``benchmarks/cli_speed.py`` records the real figures.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, base_env

HELP_LIMIT_S = 3.0


def _grouplens_dir(root: Path) -> Path:
    """A two-title, three-rating dataset in GroupLens' u.data/u.item layout."""
    root.mkdir()
    (root / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\t881250951\n")
    flags = "|".join(["0"] * 19)
    (root / "u.item").write_text(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n2|GoldenEye (1995)|01-Jan-1995||http://x|{flags}\n"
    )
    return root


def test_import_sona_and_load_movielens_do_not_load_torch(tmp_path: Path) -> None:
    data = _grouplens_dir(tmp_path / "ml")
    probe = (
        "import sys\n"
        "import sona\n"
        "catalog, events = sona.datasets.load_movielens(sys.argv[1])\n"
        "assert len(events) == 3 and len(catalog) == 2, (len(events), len(catalog))\n"
        "heavy = [m for m in ('torch', 'peft', 'sqlalchemy', 'bentoml') if m in sys.modules]\n"
        "print('loaded:', ','.join(heavy) or '-')\n"
        "from sona import Sona, SonaConfig, Storage\n"  # the public API still resolves
        "assert 'torch' in sys.modules and Sona.__name__ == 'Sona'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(data)],
        env=base_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loaded: -"


def test_every_public_name_resolves() -> None:
    import sona
    import sona.lora
    import sona.models

    for package in (sona, sona.lora, sona.models):
        missing = [n for n in package.__all__ if not hasattr(package, n)]
        assert not missing, (package.__name__, missing)
        assert set(package.__all__) <= set(dir(package))
    for sub in ("catalog", "engine", "events", "features", "lora", "models", "profile", "storage"):
        assert getattr(sona, sub).__name__ == f"sona.{sub}"  # as when sona/__init__ imported them eagerly
    with pytest.raises(AttributeError):
        sona.NoSuchName  # noqa: B018


@pytest.mark.parametrize(
    "command", [[], ["fit"], ["train-adapters"], ["serve"], ["db", "upgrade"], ["token"]]
)
def test_help_answers_without_loading_the_stack(command: list[str], tmp_path: Path) -> None:
    sona_cli = Path(sys.executable).with_name("sona")
    argv = [str(sona_cli)] if sona_cli.exists() else [sys.executable, "-m", "serving.cli"]
    t0 = time.perf_counter()
    out = subprocess.run(
        [*argv, *command, "--help"], env=base_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    seconds = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout
    assert seconds < HELP_LIMIT_S, f"sona {' '.join(command)} --help took {seconds:.2f} s"
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['sona', *{command!r}, '--help']\n"
        "try:\n    runpy.run_module('serving.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('LOADED', [m for m in ('torch', 'sqlalchemy', 'bentoml', 'peft') if m in sys.modules])\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        env=base_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "LOADED []" in loaded.stdout, loaded.stdout[-500:] + loaded.stderr[-2000:]
