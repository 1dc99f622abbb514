"""Which titles exist: the check that keeps events for unknown titles out at the edge.

A playback session for a ``content_id`` that is not in the catalog used to be
accepted, and its stored event later broke every reader that fed it to the
engine. The services now refuse such a session with 404 ``unknown_content``;
readers of stored events still skip unknown titles, so rows that are already
stored (or arrive by another route) cannot stop a process either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sona import Catalog

__all__ = ["KnownTitles"]

logger = logging.getLogger("serving.titles")


class KnownTitles:
    """``content_id in titles``, over a catalog re-read at most every ``ttl_seconds``.

    The catalog comes from ``load`` (e.g. ``Storage.load_catalog``), so a title
    added to the shared database is accepted by every replica within ``ttl_seconds``
    of a miss. If the catalog cannot be read at all, titles are let through: the
    readers of stored events tolerate unknown ones, and playback must not stop
    because the database is briefly away.
    """

    def __init__(self, load: Callable[[], Catalog], *, ttl_seconds: float = 60.0) -> None:
        self._load = load
        self.ttl_seconds = ttl_seconds
        self._ids: frozenset[str] | None = None
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._loaded_at < self.ttl_seconds:
                return
            self._loaded_at = time.monotonic()
            try:
                self._ids = frozenset(str(it.content_id) for it in self._load())
            except Exception:  # noqa: BLE001 - fail open; see the class docstring
                logger.warning("could not read the catalog; not checking titles for now", exc_info=True)

    def __contains__(self, content_id: object) -> bool:
        if self._ids is None or content_id not in self._ids:
            self._refresh()  # a miss may be a title added since the last read
        return self._ids is None or content_id in self._ids
