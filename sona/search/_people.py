"""Which of a title's ``people`` a person can read.

Some catalogs name people only by knowledge-graph ids: ml-100k's RecBole
files carry Freebase MIDs (``m.01cd39``) and no names. The ids stay in the
catalog (the engine's people similarity and an exact-id keyword match use
them); displays leave them out rather than show them as if they were names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["is_opaque_person_id", "readable_people"]

#: Freebase MIDs (m./g.), Wikidata item ids (Q123), IMDb name ids (nm0000123)
_OPAQUE = re.compile(r"(?:[mg]\.[0-9a-z_]+|Q[1-9]\d*|nm\d{5,})", re.IGNORECASE)


def is_opaque_person_id(name: str) -> bool:
    """True when ``name`` is a knowledge-graph identifier, not a human-readable name."""
    return _OPAQUE.fullmatch(name.strip()) is not None


def readable_people(people: Iterable[str]) -> tuple[str, ...]:
    """``people`` without opaque ids and blanks, order kept."""
    return tuple(p for p in people if p.strip() and not is_opaque_person_id(p))
