"""Pure, vectorized profile features: arrays or sparse matrices in, arrays out.

No I/O and no model state; these functions compute every user's features in
one call, and the engine reuses them for incremental updates of a few users.
"""

from sona.features._content import (
    cold_start_order,
    content_features,
    people_similarity,
    popularity_scores,
)
from sona.features._context import (
    CONTEXT_KEYS,
    DEVICE_TYPES,
    MOOD_GENRES,
    context_item_scores,
    daypart_onehot,
)
from sona.features._engagement import engagement_weight, temporal_decay
from sona.features._interactions import interaction_matrix, latest_per_user
from sona.features._preference import genre_affinities, l2_normalize, preference_vectors
from sona.features._profiles import EventArrays, ProfileState, compute_profiles, side_features
from sona.features._temporal import DAYPARTS, daypart_shares, recency_bias, temporal_patterns

__all__ = [
    "CONTEXT_KEYS",
    "EventArrays",
    "ProfileState",
    "cold_start_order",
    "compute_profiles",
    "content_features",
    "people_similarity",
    "popularity_scores",
    "side_features",
    "DAYPARTS",
    "DEVICE_TYPES",
    "MOOD_GENRES",
    "context_item_scores",
    "daypart_onehot",
    "daypart_shares",
    "engagement_weight",
    "genre_affinities",
    "interaction_matrix",
    "l2_normalize",
    "latest_per_user",
    "preference_vectors",
    "recency_bias",
    "temporal_decay",
    "temporal_patterns",
]
