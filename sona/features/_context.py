"""Request context (time of day, device, mood) turned into numbers."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from sona.errors import ValidationError
from sona.features._temporal import DAYPARTS

__all__ = ["CONTEXT_KEYS", "DEVICE_TYPES", "MOOD_GENRES", "context_item_scores", "daypart_onehot"]

CONTEXT_KEYS: tuple[str, ...] = ("time_of_day", "device_type", "mood")
DEVICE_TYPES: tuple[str, ...] = ("tv", "desktop", "tablet", "mobile")

#: Genres a mood leans towards; a soft prior, not a filter.
MOOD_GENRES: dict[str, tuple[str, ...]] = {
    "relaxed": ("Comedy", "Romance", "Animation", "Children's", "Musical"),
    "excited": ("Action", "Adventure", "Thriller", "Sci-Fi", "War"),
    "thoughtful": ("Drama", "Documentary", "Mystery", "Film-Noir"),
    "scared": ("Horror", "Thriller", "Mystery"),
    "happy": ("Comedy", "Musical", "Animation", "Children's", "Romance"),
    "sad": ("Drama", "Romance"),
}


def _check(context: Mapping[str, object]) -> None:
    unknown = set(context) - set(CONTEXT_KEYS)
    if unknown:
        raise ValidationError("context", f"unknown key(s) {sorted(unknown)}; allowed: {list(CONTEXT_KEYS)}")
    tod = context.get("time_of_day")
    if tod is not None and tod not in DAYPARTS:
        raise ValidationError("context.time_of_day", f"expected one of {list(DAYPARTS)}, got {tod!r}")
    dev = context.get("device_type")
    if dev is not None and dev not in DEVICE_TYPES:
        raise ValidationError("context.device_type", f"expected one of {list(DEVICE_TYPES)}, got {dev!r}")
    mood = context.get("mood")
    if mood is not None and mood not in MOOD_GENRES:
        raise ValidationError("context.mood", f"expected one of {sorted(MOOD_GENRES)}, got {mood!r}")


def daypart_onehot(context: Mapping[str, object] | None) -> npt.NDArray[np.float32] | None:
    """(4,) one-hot of ``context['time_of_day']``, or None when not given."""
    if not context:
        return None
    _check(context)
    tod = context.get("time_of_day")
    if tod is None:
        return None
    out = np.zeros(len(DAYPARTS), dtype=np.float32)
    out[DAYPARTS.index(str(tod))] = 1.0
    return out


def context_item_scores(
    context: Mapping[str, object] | None,
    genre_matrix: sp.csr_matrix,
    genres: tuple[str, ...],
    durations_seconds: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """(n_items,) context prior in [-1, 1]: mood → genre match; mobile → shorter titles.

    Zeros when no context is given, so the context component vanishes.
    """
    n = genre_matrix.shape[0]
    out = np.zeros(n, dtype=np.float32)
    if not context:
        return out
    _check(context)
    mood = context.get("mood")
    if mood is not None:
        cols = [genres.index(g) for g in MOOD_GENRES[str(mood)] if g in genres]
        if cols:
            out += np.asarray(genre_matrix[:, cols].sum(axis=1)).ravel().clip(0, 1).astype(np.float32)
    dev = context.get("device_type")
    if dev == "mobile":
        d = np.nan_to_num(durations_seconds, nan=5400.0)
        out -= (d > 6000).astype(np.float32) * 0.5
    return out
