"""Figure 5: a misaligned supervisor mixing in a wrong concept with weight gamma. Refinement's
posterior commits to the target iff gamma < 1/2: the phase transition of eq. T.19. ~5 s."""

import dataclasses

import numpy as np

from theory.experiments import Experiment
from theory.sweeps import MisalignedSweep

SWEEP = MisalignedSweep(gammas=tuple(np.round(np.linspace(0.0, 1.0, 21), 3)), delta=0.5, n_max=32)

EXPERIMENT = Experiment(
    name="misaligned",
    title="Misaligned supervisor: refinement succeeds iff gamma < 1/2",
    sweep=SWEEP,
    quick=dataclasses.replace(SWEEP, gammas=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), n_max=24),
    trials=500,
    figure="plot_misaligned",
)
