"""Telling an outage from a failure that will repeat, for the loops that retry writes."""

from __future__ import annotations

from sona import StorageUnavailableError

__all__ = ["transient"]


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the store is unreachable, not the data bad.

    :class:`sona.StorageUnavailableError` (lost connection, locked or read-only
    database, missing table) and ``OSError``/``TimeoutError`` are worth retrying for as
    long as they last; anything else (rejected data, a bug) will fail again on
    the same input.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageUnavailableError | OSError | TimeoutError):
            return True
        current = current.__cause__ or current.__context__
    return False
