"""Label methods of the weak-to-strong pipeline: how the student's training labels are made.

Every module of this package is imported on first use of :func:`get_method`/:func:`all_methods`,
so a new method is one file with a ``@register``-decorated :class:`Method` subclass.
"""

from __future__ import annotations

import importlib
import pkgutil

from w2s_jax.methods.base import METHODS, Method, MethodContext, label_row, register

__all__ = ["METHODS", "Method", "MethodContext", "all_methods", "get_method", "label_row", "register"]


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def all_methods() -> dict[str, type[Method]]:
    """Every registered method by name."""
    _discover()
    return dict(sorted(METHODS.items()))


def get_method(name: str) -> type[Method]:
    """The method class named ``name``; the error suggests the closest name."""
    methods = all_methods()
    if name not in methods:
        import difflib

        close = difflib.get_close_matches(name, methods, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown method {name!r}{hint}; methods: {', '.join(methods)}")
    return methods[name]
