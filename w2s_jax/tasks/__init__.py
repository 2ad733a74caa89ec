"""Tasks of the weak-to-strong pipeline: data rows, prompts, answers, metrics, judges.

Every module of this package is imported on first use of :func:`get_task`/:data:`TASKS`, so a new
task is one file with a ``@register``-decorated :class:`Task` subclass.
"""

from __future__ import annotations

from w2s_jax.inference.generation_settings import Generation  # the sampling settings tasks answer with
from w2s_jax.tasks.base import (
    TASKS,
    DataError,
    Example,
    Task,
    field,
    register,
)

__all__ = ["TASKS", "DataError", "Example", "Generation", "Task", "all_tasks", "field", "get_task",
           "register"]


def all_tasks() -> dict[str, type[Task]]:
    """Every registered task by name (every module of this package imported first)."""
    return TASKS.all()


def get_task(name: str) -> type[Task]:
    """The task class named ``name``; the error suggests the closest name."""
    return TASKS.get(name)
