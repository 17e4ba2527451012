"""Lazy name → class lookup shared by the tool-call and reasoning registries."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class UnknownParserError(ValueError):
    pass


def load(table: Mapping[str, str], name: str, *, package: str, base: type[T], what: str) -> type[T]:
    """Import the ``"module:Class"`` that *table* names for *name* (from *package*), only when asked,
    so a server loads just its own parser; an unknown name lists the known ones."""
    target = table.get(name)
    if target is None:
        raise UnknownParserError(f"unknown {what} {name!r}; known: {', '.join(sorted(table))}")
    module, cls = target.split(":")
    parser = getattr(importlib.import_module(f"{package}.{module}"), cls)
    assert issubclass(parser, base)
    return parser
