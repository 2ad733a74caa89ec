"""Experiment kinds: what ``w2s run`` does with a file, chosen by its top-level ``kind``.

A kind is registered in :data:`w2s_jax.registry.EXPERIMENT_KINDS`; it loads its file, turns its
config into a graph of stages (:meth:`ExperimentKind.graph`), runs it in the shared store and
writes (or rebuilds) its report. ``standard`` (the default) is this package's experiment; the
concept world registers ``concept-world`` in ``w2s_jax.concept_world.kind``.
"""

from __future__ import annotations

import tomllib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from w2s_jax.pipeline.config import ExperimentError
from w2s_jax.registry import EXPERIMENT_KINDS

register_kind = EXPERIMENT_KINDS.register


class ExperimentKind(ABC):
    """One kind of experiment file (see the module docstring)."""

    name: ClassVar[str]
    has_quick: ClassVar[bool] = False  # a ``--quick`` preset

    @abstractmethod
    def load(self, path: str | Path, *, overrides: Sequence[str] = (), methods: Sequence[str] | None = None,
             quick: bool = False) -> Any:
        """The checked config of an experiment file (ExperimentError on bad input)."""

    def preflight(self, config: Any, run_dir: str | Path | None) -> None:
        """Checks what can be checked before the first stage (ExperimentError); default: nothing
        beyond :meth:`load`."""

    @abstractmethod
    def graph(self, config: Any, store) -> list:
        """The experiment's stages, inputs first (nothing runs)."""

    @abstractmethod
    def run(self, config: Any, *, run_dir: str | Path | None = None, store: str | Path | None = None,
            show_progress: bool = True, figures: bool = True, dry_run: bool = False,
            methods: Sequence[str] | None = None) -> dict:
        """Runs (or resumes) the experiment, or with ``dry_run`` lists its stages' states."""

    @abstractmethod
    def owns(self, run_dir: Path) -> bool:
        """Whether ``run_dir`` is a run directory of this kind."""

    @abstractmethod
    def report(self, run_dir: str | Path, *, figures: bool = True) -> str:
        """Rebuilds the report of a run directory; returns its Markdown."""


def kind_of_file(path: str | Path) -> ExperimentKind:
    """The kind of an experiment file (``standard`` when it has no ``kind``; a missing or broken
    file is left to the kind's loader to report)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        raw = {}
    name = raw.get("kind", "standard")
    try:
        return EXPERIMENT_KINDS.get(str(name))()
    except KeyError as error:
        raise ExperimentError(f"{path}: {error.args[0]}") from None


def kind_of_run_dir(run_dir: str | Path) -> ExperimentKind | None:
    """The kind whose run directory ``run_dir`` is, or None."""
    for cls in EXPERIMENT_KINDS.all().values():
        if cls().owns(Path(run_dir)):
            return cls()
    return None


@register_kind
class Standard(ExperimentKind):
    """A weak-to-strong experiment on language models (docs/pipeline.md)."""

    name = "standard"

    def load(self, path, *, overrides=(), methods=None, quick=False):
        from w2s_jax.pipeline.config import load_experiment

        if quick:
            kinds = ", ".join(f"kind = {name!r}" for name, cls in EXPERIMENT_KINDS.all().items() if cls.has_quick)
            raise ExperimentError(f"{path}: --quick is for experiment kinds with a quick preset "
                                  f"({kinds}); this is a standard experiment")
        return load_experiment(path, overrides=overrides, methods=methods)

    def preflight(self, config, run_dir):
        from w2s_jax.pipeline.preflight import preflight

        preflight(config, run_dir)

    def graph(self, config, store):
        from w2s_jax.pipeline.plan import build_plan, validate
        from w2s_jax.pipeline.refs import Split
        from w2s_jax.pipeline.stage import graph_order

        train, test = validate(config)
        stages, _ = build_plan(config, Split("train", tuple(train)), Split("test", tuple(test)))
        return graph_order(stages)

    def run(self, config, *, run_dir=None, store=None, show_progress=True, figures=True, dry_run=False,
            methods=None):
        from w2s_jax.pipeline.runner import run_experiment

        return run_experiment(config, run_dir=run_dir, store=store, show_progress=show_progress,
                              figures=figures, dry_run=dry_run)

    def owns(self, run_dir):
        from w2s_jax.pipeline.report import PLAN

        return (run_dir / PLAN).is_file()

    def report(self, run_dir, *, figures=True):
        from w2s_jax.pipeline.report import results_markdown, write_report

        return results_markdown(write_report(run_dir, figures=figures))
