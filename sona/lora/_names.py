"""The one mapping from a user id to an adapter name.

peft keeps adapters in ``nn.ModuleDict``s keyed by name, so a name must be a
valid module key (no ``.``, not empty) and is also used as a directory name.
User ids are arbitrary strings, so the name keeps a readable, sanitized prefix
and appends a hash of the full id, which makes it unique and stable.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["adapter_name", "user_seed"]

_UNSAFE = re.compile(r"[^0-9A-Za-z_-]")


def adapter_name(user_id: str) -> str:
    """Return the peft adapter name (and storage key) of ``user_id``'s adapter."""
    raw = str(user_id)
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:12]
    prefix = _UNSAFE.sub("_", raw)[:32]
    return f"u_{prefix}_{digest}"


def user_seed(user_id: str, seed: int) -> int:
    """A 31-bit seed per (user, config seed): training is independent of batch composition."""
    digest = hashlib.sha256(f"{seed}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
