"""Seeded synthetic catalog and viewing events, for scale benchmarks and demos.

Users have latent tastes over genres (Dirichlet), titles have Zipf popularity,
and viewing carries realistic side signals: completion mostly high for liked
titles, dismissals for disliked ones, evening-heavy hours. Events are drawn in
user chunks with NumPy, so 10M events fit in a few hundred MB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sona.catalog import Catalog, ContentItem
from sona.errors import ConfigError

__all__ = ["SyntheticConfig", "generate_synthetic"]

GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
    "Film-Noir",
)
_WORDS = (
    "night",
    "river",
    "shadow",
    "king",
    "city",
    "lost",
    "last",
    "blue",
    "iron",
    "secret",
    "summer",
    "dark",
    "star",
    "heart",
    "road",
    "storm",
    "ghost",
    "golden",
    "silent",
    "wild",
    "empire",
    "echo",
    "winter",
    "fire",
    "garden",
    "machine",
    "dream",
    "stone",
    "island",
    "mirror",
)
# Share of a day's viewing by hour: low at night, peak in the evening.
_HOURS = np.array([2, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 6, 7, 9, 11, 12, 10, 7, 4], dtype=float)


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """Size and seed of a synthetic dataset."""

    n_items: int = 2_000
    n_users: int = 1_000
    events_per_user: float = 40.0
    seed: int = 0
    start: str = "2026-01-01"
    days: int = 180

    def __post_init__(self) -> None:
        if self.n_items < 1 or self.n_users < 0:
            raise ConfigError("n_items must be >= 1 and n_users >= 0")
        if self.events_per_user < 0 or self.days < 1:
            raise ConfigError("events_per_user must be >= 0 and days >= 1")


def _catalog(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[Catalog, np.ndarray]:
    n, g = cfg.n_items, len(GENRES)
    primary = rng.integers(0, g, n)
    secondary = np.where(rng.random(n) < 0.5, rng.integers(0, g, n), primary)
    pop = 1.0 / np.arange(1, n + 1) ** 0.9
    pop = pop[rng.permutation(n)]
    years = rng.integers(1950, 2026, n)
    words = rng.integers(0, len(_WORDS), (n, 3))
    nwords = rng.integers(1, 4, n)
    items = []
    for i in range(n):
        title = " ".join(_WORDS[w] for w in words[i, : nwords[i]]).title() + f" {i}"
        genres = tuple(dict.fromkeys((GENRES[primary[i]], GENRES[secondary[i]])))
        items.append(
            ContentItem(
                content_id=f"c{i}",
                title=title,
                genres=genres,
                release_year=int(years[i]),
                duration_seconds=float(rng.integers(20, 180) * 60),
                popularity=float(pop[i]),
                overview=f"A {genres[0].lower()} story about the {_WORDS[words[i, 0]]}.",
            )
        )
    onehot = np.zeros((n, g), dtype=np.float32)
    onehot[np.arange(n), primary] = 1.0
    onehot[np.arange(n), secondary] = 1.0
    return Catalog(items), onehot * pop[:, None].astype(np.float32)


def generate_synthetic(
    config: SyntheticConfig | None = None, *, chunk_users: int = 20_000
) -> tuple[Catalog, pd.DataFrame]:
    """Generate ``(catalog, events)``; the same config always gives the same data."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    catalog, item_genre_pop = _catalog(cfg, rng)
    # Each genre's titles as a sampling distribution (popularity-weighted).
    per_genre = item_genre_pop / item_genre_pop.sum(axis=0, keepdims=True).clip(1e-12)
    cum = np.cumsum(per_genre, axis=0).T  # (g, n)
    start = pd.Timestamp(cfg.start, tz="UTC").value // 10**9
    hours_p = _HOURS / _HOURS.sum()
    durations = np.array([it.duration_seconds or 3600.0 for it in catalog], dtype=np.float64)
    frames = []
    for lo in range(0, cfg.n_users, chunk_users):
        hi = min(lo + chunk_users, cfg.n_users)
        m = hi - lo
        taste = rng.dirichlet(np.full(len(GENRES), 0.3), m)
        counts = rng.poisson(cfg.events_per_user, m)
        total = int(counts.sum())
        uidx = np.repeat(np.arange(m), counts)
        gcum = np.cumsum(taste, axis=1)[uidx]
        genre = (gcum < rng.random(total)[:, None]).sum(axis=1).clip(0, len(GENRES) - 1)
        u = rng.random(total)
        item = np.empty(total, dtype=np.int64)
        for gi in np.unique(genre):  # loop over 18 genres, not over events
            sel = genre == gi
            item[sel] = np.searchsorted(cum[gi], u[sel]).clip(0, cfg.n_items - 1)
        liked = taste[uidx, genre] > 0.15
        completion = np.where(liked, rng.beta(5, 1.2, total), rng.beta(1.2, 3, total))
        dismissed = (~liked) & (rng.random(total) < 0.15)
        completion = np.where(dismissed, completion * 0.1, completion)
        rated = rng.random(total) < 0.3
        rating = np.where(
            rated, np.clip(np.round(1 + 4 * completion + rng.normal(0, 0.6, total)), 1, 5), np.nan
        )
        day = rng.integers(0, cfg.days, total)
        hour = rng.choice(24, total, p=hours_p)
        ts = start + day * 86400 + hour * 3600 + rng.integers(0, 3600, total)
        frames.append(
            pd.DataFrame(
                {
                    "user_id": (lo + uidx).astype(str).astype(object) if m else np.array([], dtype=object),
                    "content_id": catalog.ids[item],
                    "timestamp": pd.to_datetime(ts, unit="s", utc=True),
                    "completion_rate": completion.round(4),
                    "watch_seconds": (completion * durations[item]).round(1),
                    "rating": rating,
                    "dismissed": dismissed,
                    "is_rewatch": False,
                    "source": "synthetic",
                }
            )
        )
    events = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            columns=[
                "user_id",
                "content_id",
                "timestamp",
                "completion_rate",
                "watch_seconds",
                "rating",
                "dismissed",
                "is_rewatch",
                "source",
            ]
        )
    )
    events["user_id"] = "u" + events["user_id"].astype(str)
    events = events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    events.insert(
        0, "event_id", "s" + pd.Series(np.arange(len(events))).astype(str).str.zfill(9) + "-" + str(cfg.seed)
    )
    return catalog, events
