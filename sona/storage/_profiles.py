"""The ``user_profiles`` table. Vectors are stored as little-endian float32 bytes: exact and compact."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sona._ids import UserId
from sona.errors import ValidationError
from sona.profile import UserProfile
from sona.storage._schema import UserProfileRow
from sona.storage._sql import dialect_insert, to_json

__all__ = ["load_profiles", "save_profiles"]

_T = UserProfileRow.__table__
_CHUNK = 5_000


def _row(index: int, p: UserProfile) -> dict[str, object]:
    if not isinstance(p, UserProfile):
        raise ValidationError("profile", "must be a UserProfile", index=index)
    if not isinstance(p.user_id, str) or not p.user_id.strip():
        raise ValidationError("user_id", "must be a non-empty string", index=index)
    vec = np.asarray(p.preference_vector, dtype="<f4").ravel()
    if not np.isfinite(vec).all():
        raise ValidationError("preference_vector", "must be finite", index=index)
    return {
        "user_id": p.user_id,
        "preference_vector": vec.tobytes(),
        "vector_dim": int(vec.size),
        "genre_affinities": to_json(p.genre_affinities, "genre_affinities"),
        "temporal_patterns": to_json(p.temporal_patterns, "temporal_patterns"),
        "interaction_count": int(p.interaction_count),
        "updated_at": p.updated_at,
    }


def save_profiles(conn: Connection, profiles: Sequence[UserProfile]) -> int:
    """Insert or replace each profile; validates all before writing any."""
    unique = {r["user_id"]: r for r in (_row(i, p) for i, p in enumerate(profiles))}  # last one wins
    rows = list(unique.values())
    if not rows:
        return 0
    stmt = dialect_insert(conn, _T)
    changed = {c: stmt.excluded[c] for c in rows[0] if c != "user_id"}
    conn.execute(stmt.on_conflict_do_update(index_elements=["user_id"], set_=changed), rows)
    return len(rows)


def _profile(r: sa.RowMapping) -> UserProfile:
    vec = np.frombuffer(r["preference_vector"], dtype="<f4").astype(np.float32)
    return UserProfile(
        user_id=UserId(r["user_id"]),
        preference_vector=vec,
        genre_affinities={str(k): float(v) for k, v in (r["genre_affinities"] or {}).items()},
        temporal_patterns={str(k): list(v) for k, v in (r["temporal_patterns"] or {}).items()},
        interaction_count=int(r["interaction_count"]),
        updated_at=r["updated_at"],
    )


def load_profiles(conn: Connection, user_ids: Sequence[str] | None) -> dict[str, UserProfile]:
    if user_ids is None:
        statements = [sa.select(_T)]
    else:
        ids = list(dict.fromkeys(str(u) for u in user_ids))
        statements = [
            sa.select(_T).where(_T.c.user_id.in_(ids[i : i + _CHUNK])) for i in range(0, len(ids), _CHUNK)
        ]
    out: dict[str, UserProfile] = {}
    for stmt in statements:
        for r in conn.execute(stmt.order_by(_T.c.user_id)).mappings():
            out[r["user_id"]] = _profile(r)
    return out
