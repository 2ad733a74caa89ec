"""Named strategies found by name: the registry behind ``w2s_jax.methods``, ``w2s_jax.tasks`` and
the experiment kinds of ``w2s run``.

A registry belongs to a package (or to a list of modules). ``@registry.register`` records a class
under its ``name``; :meth:`Registry.all` first imports every module of the package, so a new
strategy is one file dropped into it, with nothing else to edit. An unknown name is an error
suggesting the closest registered one.
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
      modules: or the modules that define them (each imported on first look-up).
    """

    def __init__(self, kind: str, package: str | None = None, *, modules: tuple[str, ...] = ()):
        self.kind, self.package, self.modules = kind, package, modules
        self._classes: dict[str, T] = {}

    def register(self, cls: T) -> T:
        """Class decorator: makes ``cls`` available as ``cls.name``."""
        if cls.name in self._classes and self._classes[cls.name] is not cls:
            raise ValueError(f"two {self.kind}s named {cls.name!r}: {self._classes[cls.name]} and {cls}")
        self._classes[cls.name] = cls
        return cls

    def all(self) -> dict[str, T]:
        """Every registered class by name, sorted, after importing the package's modules."""
        if self.package is not None:
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
        for module in self.modules:
            importlib.import_module(module)
        return dict(sorted(self._classes.items()))

    def get(self, name: str) -> T:
        """The class named ``name``; a KeyError suggests the closest name and lists them all."""
        classes = self.all()
        if name not in classes:
            close = difflib.get_close_matches(name, classes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint}; {self.kind}s: {', '.join(classes)}")
        return classes[name]


# The experiment kinds of `w2s run` (the experiment file's top-level ``kind``): each module
# registers a ``w2s_jax.pipeline.kind.ExperimentKind``. Named here, above both, so that the pipeline
# never imports the kinds built on it.
EXPERIMENT_KINDS: Registry = Registry("experiment kind", modules=("w2s_jax.pipeline.kind",
                                                                  "w2s_jax.concept_world.kind",
                                                                  "w2s_jax.classify.kind"))
