"""Identifier types. Ids are strings everywhere: MovieLens ints become ``"196"``."""

from typing import NewType

__all__ = ["ContentId", "UserId"]

UserId = NewType("UserId", str)
ContentId = NewType("ContentId", str)
