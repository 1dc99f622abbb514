"""Where the command line, the quickstart and a demo service get training data: a path, or ``synthetic``.

One spelling everywhere (``sona fit --data``, ``sona evaluate --data``, the
quickstart): a MovieLens-100k directory (RecBole atomic or GroupLens layout), or
``synthetic[:USERS[xITEMS]]`` for the seeded generator, so a machine without
the dataset still has a working path. :func:`find_movielens` is where a process
with no ``--data`` looks (``SONA_MOVIELENS``, else the shared datasets directory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from sona.catalog import Catalog
from sona.datasets import SyntheticConfig, generate_synthetic, load_movielens
from sona.errors import ConfigError

if TYPE_CHECKING:
    from sona_app.settings import Settings

__all__ = [
    "SYNTHETIC_DEFAULT",
    "TrainingData",
    "default_training_data",
    "find_movielens",
    "load_training_data",
    "looks_like_movielens",
]

#: The synthetic fallback: small enough to fit in seconds on two cores.
SYNTHETIC_DEFAULT = SyntheticConfig(n_items=500, n_users=300, events_per_user=30.0, seed=0)
_SYNTHETIC = re.compile(r"^synthetic(?::(\d+)(?:x(\d+))?)?$")


@dataclass(frozen=True, slots=True)
class TrainingData:
    """A catalog, its events (``sona.EVENT_COLUMNS``) and a one-line description of the source."""

    catalog: Catalog
    events: pd.DataFrame
    source: str


def looks_like_movielens(path: Path) -> bool:
    """True for a directory holding RecBole ``*.inter`` files or GroupLens ``u.data``."""
    return path.is_dir() and (any(path.glob("*.inter")) or (path / "u.data").exists())


def load_training_data(spec: str | Path, *, seed: int = 0) -> TrainingData:
    """Load ``spec``: a MovieLens directory, ``synthetic``, ``synthetic:300`` or ``synthetic:300x500``.

    Raises
    ------
    ConfigError
        ``spec`` is neither an existing MovieLens directory nor a synthetic spec.
    DatasetFormatError
        The directory exists but its files do not parse (from :func:`sona.datasets.load_movielens`).
    """
    text = str(spec).strip()
    match = _SYNTHETIC.match(text)
    if match:
        users, items = match.group(1), match.group(2)
        cfg = SyntheticConfig(
            n_items=int(items) if items else SYNTHETIC_DEFAULT.n_items,
            n_users=int(users) if users else SYNTHETIC_DEFAULT.n_users,
            events_per_user=SYNTHETIC_DEFAULT.events_per_user,
            seed=seed,
        )
        catalog, events = generate_synthetic(cfg)
        return TrainingData(catalog, events, f"synthetic ({cfg.n_users} users x {cfg.n_items} titles)")
    path = Path(text).expanduser()
    if not looks_like_movielens(path):
        raise ConfigError(
            f"--data {text!r}: expected a MovieLens-100k directory (*.inter or u.data) "
            "or 'synthetic[:USERS[xITEMS]]'"
        )
    catalog, events = load_movielens(path)
    return TrainingData(catalog, events, f"movielens ({path})")


def find_movielens(settings: Settings) -> Path | None:
    """ml-100k: ``$SONA_MOVIELENS``, else ``shared/datasets/ml-100k`` beside the data dir or the repo."""
    candidates = [] if settings.movielens_dir is None else [settings.movielens_dir]
    repo = Path(__file__).resolve().parents[1]
    for base in (settings.data_dir.resolve().parent, repo.parent):
        candidates.append(base / "shared" / "datasets" / "ml-100k")
    for path in candidates:
        if looks_like_movielens(path):
            return path
    return None


def default_training_data(settings: Settings) -> TrainingData:
    """What a process fits on when it is given no data: MovieLens-100k if found, else ``synthetic``."""
    path = find_movielens(settings)
    return load_training_data(path if path is not None else "synthetic")
