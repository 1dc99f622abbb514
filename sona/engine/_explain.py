"""Turning ranked title positions into :class:`Recommendation` objects with their explanation.

The ranking decides *what* is shown; this decides *why it says so*: which
source carried each title, which of the user's titles support it
(``based_on``) and the one-line explanation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from sona._ids import ContentId
from sona.catalog import Catalog
from sona.models._recommendation import Recommendation, RecommendationType

__all__ = ["because", "cold_recommendation", "explained", "recommendation", "top_sources"]

#: Recommendation type of the source that contributed most to a title.
_TYPES: dict[str, RecommendationType] = {
    "collaborative": "collaborative",
    "tower": "personalized",
    "content": "content",
    "graph": "graph",
    "genre_affinity": "content",
    "popularity": "popular",
    "trending": "trending",
    "explore": "explore",
}
#: Components that explain a score but never name a title's source.
_NOT_SOURCES = ("adapter_delta", "context")


def top_sources(parts: Mapping[str, npt.NDArray[np.float32]], explored: bool) -> list[str]:
    """Per title, the source with the largest contribution in ``parts`` (each (m,)); the last is
    ``"explore"`` when the list carries an exploration slot."""
    names = [n for n in parts if n not in _NOT_SOURCES]
    contrib = np.stack([parts[n] for n in names])  # (sources, m)
    best = [names[j] for j in np.argmax(contrib, axis=0)]
    if explored and best:
        best[-1] = "explore"
    return best


def because(
    catalog: Catalog,
    weights_row: sp.csr_matrix,
    items: npt.NDArray[np.int64],
    sources: Sequence[str],
    *,
    content_unit: npt.NDArray[np.float32],
    item_item: Mapping[str, npt.NDArray[np.float32] | sp.csr_matrix | None],
) -> list[tuple[ContentId, ...]]:
    """For each item, up to three of the user's titles that most support it under its source.

    ``weights_row`` is the user's (1, n_items) engagement row; support is that
    weight times the similarity the source uses (``item_item`` by source name,
    content-embedding cosine otherwise).
    """
    out: list[tuple[ContentId, ...]] = [() for _ in sources]
    hist, wv = weights_row.indices, weights_row.data
    if len(hist) == 0 or len(items) == 0:
        return out
    items = np.asarray(items, dtype=np.int64)
    content = (content_unit[hist] @ content_unit[items].T) * wv[:, None]  # (hist, k)
    sims = {"content": content}
    for name, mat in item_item.items():
        if mat is not None and name in sources:
            sub = mat[hist][:, items]
            sims[name] = (sub.toarray() if sp.issparse(sub) else np.asarray(sub)) * wv[:, None]
    for j, src in enumerate(sources):
        if src in ("popularity", "trending", "explore"):
            continue
        support = sims.get(src, content)[:, j]
        order = np.argsort(-support, kind="stable")[:3]
        order = order[support[order] > 0]
        out[j] = tuple(ContentId(str(c)) for c in catalog.ids[hist[order]])
    return out


def cold_recommendation(catalog: Catalog, item: int, score: float) -> Recommendation:
    it = catalog.item_at(item)
    genre = it.genres[0] if it.genres else "the catalog"
    return Recommendation(
        content_id=ContentId(it.content_id),
        score=score,
        recommendation_type="cold_start",
        explanation=f"Popular in {genre}",
    )


def recommendation(
    catalog: Catalog, item: int, score: float, source: str, based: tuple[ContentId, ...]
) -> Recommendation:
    """One :class:`Recommendation`, its type and sentence chosen by ``source`` and ``based``."""
    rtype = _TYPES.get(source, "personalized")
    it = catalog.item_at(item)
    if rtype == "explore":
        text = f"Something different: {it.title}"
    elif rtype in ("popular", "trending"):
        text = f"{'Trending' if rtype == 'trending' else 'Popular'} right now"
    elif based:
        names = [catalog[c].title for c in based[:2]]
        text = "Because you watched " + " and ".join(names)
    elif rtype == "content" and it.genres:
        text = f"Matches your taste for {it.genres[0]}"
    else:
        text = "Picked for you"
    return Recommendation(
        content_id=ContentId(it.content_id),
        score=score,
        recommendation_type=rtype,
        based_on=based,
        explanation=text,
    )


def explained(
    catalog: Catalog,
    items: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    sources: Sequence[str],
    based: Sequence[tuple[ContentId, ...]],
) -> list[Recommendation]:
    """The recommendation list of one user (builds result objects, no math)."""
    return [
        recommendation(catalog, int(i), float(s), src, b)
        for i, s, src, b in zip(items, scores, sources, based, strict=True)
    ]
