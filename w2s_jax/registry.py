"""Named strategies found by name: the registry behind ``w2s_jax.methods`` and ``w2s_jax.tasks``.

A registry belongs to a package. ``@registry.register`` records a class under its ``name``;
:meth:`Registry.all` first imports every module of the package, so a new strategy is one file
dropped into it, with nothing else to edit. An unknown name is an error suggesting the closest
registered one.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes of one kind by name.

    Arguments:
      kind: what the classes are, for messages ("method", "task").
      package: the package whose modules define them (imported on first look-up).
    """

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._classes: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: makes ``cls`` available as ``cls.name``."""
        if cls.name in self._classes and self._classes[cls.name] is not cls:
            raise ValueError(f"two {self.kind}s named {cls.name!r}: {self._classes[cls.name]} and {cls}")
        self._classes[cls.name] = cls
        return cls

    def all(self) -> dict[str, T]:
        """Every registered class by name, sorted, after importing the package's modules."""
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        return dict(sorted(self._classes.items()))

    def get(self, name: str) -> T:
        """The class named ``name``; a KeyError suggests the closest name and lists them all."""
        classes = self.all()
        if name not in classes:
            close = difflib.get_close_matches(name, classes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint}; {self.kind}s: {', '.join(classes)}")
        return classes[name]
