"""Lazy package exports: ``from recsys.serve import read_salt`` must not import Flask, nor ``recsys.catalog`` Spark
jobs' whole cascade. A package lists ``name -> module`` and the module is imported on first attribute access."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A module ``__getattr__`` resolving ``exports`` on demand, and the matching ``__all__``."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(exports[name]), name)

    return __getattr__, sorted(exports)
