"""Label methods of the weak-to-strong pipeline: how the student's training labels are made.

Every module of this package is imported on first use of :func:`get_method`/:func:`all_methods`,
so a new method is one file with a ``@register``-decorated :class:`Method` subclass.
"""

from __future__ import annotations

from w2s_jax.methods.base import METHODS, Method, MethodContext, label_row, register

__all__ = ["METHODS", "Method", "MethodContext", "all_methods", "get_method", "label_row", "register"]


def all_methods() -> dict[str, type[Method]]:
    """Every registered method by name (every module of this package imported first)."""
    return METHODS.all()


def get_method(name: str) -> type[Method]:
    """The method class named ``name``; the error suggests the closest name."""
    return METHODS.get(name)
