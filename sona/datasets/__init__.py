"""Dataset loaders: MovieLens-100k (GroupLens or RecBole layout) and a seeded synthetic generator."""

from sona.datasets._movielens import load_movielens
from sona.datasets._synthetic import SyntheticConfig, generate_synthetic

__all__ = ["SyntheticConfig", "generate_synthetic", "load_movielens"]
