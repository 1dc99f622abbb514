"""Dataset loaders: every MovieLens layout (ml-100k to ml-25m, RecBole) and a seeded synthetic generator."""

from sona.datasets._movielens import DatasetWarning, load_movielens
from sona.datasets._synthetic import SyntheticConfig, generate_synthetic

__all__ = ["DatasetWarning", "SyntheticConfig", "generate_synthetic", "load_movielens"]
