"""The theory experiments, one small file per figure; ``EXPERIMENTS`` maps name -> Experiment.

Each file declares ``EXPERIMENT``: which sweep (``theory.sweeps``) on which setting, with its
quick variant. Add an experiment by adding a file and its name to ``_MODULES``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

__all__ = ["Experiment", "EXPERIMENTS", "get"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
    """A named sweep, its quick variant (``--quick``, for tests and smoke runs) and its figure."""

    name: str  # identifier used by --experiment and as the output file stem
    title: str  # one-line statement of what the figure shows
    sweep: Any  # a theory.sweeps strategy with run(*, key, trials) -> dict
    quick: Any  # the same sweep on a smaller grid
    trials: int = 1000  # default Monte Carlo trials
    figure: str = ""  # name of the plotting function in theory.figures


_MODULES = ("ft_trapped", "refine_decay", "weak_quality", "noisy", "misaligned", "misfit")
EXPERIMENTS: dict[str, Experiment] = {
    m: importlib.import_module(f"theory.experiments.{m}").EXPERIMENT for m in _MODULES
}


def get(name: str) -> Experiment:
    """The experiment called ``name``; the error lists the known names."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]
