"""Lazy re-exports for package ``__init__`` files (PEP 562).

A package lists ``name -> defining module`` and gets a module ``__getattr__``
that imports the module on first access, so importing the package (or the
``sona`` CLI for ``--help``) does not load torch, peft or SQLAlchemy until a
name that needs them is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public names live in ``exports``' modules.

    A value equal to ``f"{package}.{name}"`` exports that submodule itself. The
    first access stores the object in ``namespace`` (the package's globals), so
    later lookups are ordinary attribute reads.
    """

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(module_name)
        value = module if module_name == f"{package}.{name}" else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
