"""Tasks of the weak-to-strong pipeline: data rows, prompts, answers, metrics, judges.

Every module of this package is imported on first use of :func:`get_task`/:data:`TASKS`, so a new
task is one file with a ``@register``-decorated :class:`Task` subclass.
"""

from __future__ import annotations

import importlib
import pkgutil

from w2s_jax.tasks.base import TASKS, DataError, Example, Generation, Task, field, register

__all__ = ["TASKS", "DataError", "Example", "Generation", "Task", "all_tasks", "field", "get_task",
           "register"]


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def all_tasks() -> dict[str, type[Task]]:
    """Every registered task by name."""
    _discover()
    return dict(sorted(TASKS.items()))


def get_task(name: str) -> type[Task]:
    """The task class named ``name``; the error suggests the closest name."""
    tasks = all_tasks()
    if name not in tasks:
        import difflib

        close = difflib.get_close_matches(name, tasks, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown task {name!r}{hint}; tasks: {', '.join(tasks)}")
    return tasks[name]
