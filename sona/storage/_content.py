"""The ``content`` table: the catalog, kept in catalog order."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from sona._ids import ContentId
from sona.catalog import Catalog, ContentItem
from sona.errors import DataError
from sona.storage._schema import ContentRow
from sona.storage._sql import dialect_insert, to_json

__all__ = ["load_catalog", "upsert_content"]

_T = ContentRow.__table__


def upsert_content(conn: Connection, items: Catalog | Iterable[ContentItem]) -> int:
    """Insert new titles at the end of the catalog order and update existing ones in place."""
    catalog = items if isinstance(items, Catalog) else Catalog(items)  # validates unique ids
    top = conn.execute(sa.select(sa.func.max(_T.c.position))).scalar()
    base = 0 if top is None else int(top) + 1
    rows = [
        {
            "id": it.content_id,
            "position": base + i,
            "title": it.title,
            "genres": list(it.genres),
            "release_year": it.release_year,
            "duration_seconds": None if it.duration_seconds is None else float(it.duration_seconds),
            "popularity": float(it.popularity),
            "overview": it.overview,
            "people": list(it.people),
            "extra_metadata": to_json(it.metadata, "metadata"),
        }
        for i, it in enumerate(catalog)
    ]
    stmt = dialect_insert(conn, _T)
    updated = {c: stmt.excluded[c] for c in rows[0] if c not in ("id", "position")}
    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=updated), rows)
    return len(rows)


def load_catalog(conn: Connection) -> Catalog:
    rows = conn.execute(sa.select(_T).order_by(_T.c.position, _T.c.id)).mappings().all()
    if not rows:
        raise DataError("the content table is empty; store a catalog with upsert_content first")
    return Catalog(
        ContentItem(
            content_id=ContentId(r["id"]),
            title=r["title"],
            genres=tuple(r["genres"] or ()),
            release_year=r["release_year"],
            duration_seconds=r["duration_seconds"],
            popularity=r["popularity"],
            overview=r["overview"],
            people=tuple(r["people"] or ()),
            metadata=dict(r["extra_metadata"] or {}),
        )
        for r in rows
    )
