"""Figure 2: refinement error 1 - E[pi*] decays exponentially in n_icl; Monte Carlo against the
Chernoff bound, and the fitted slope against the computed exponent rho*. ~3 s on 2 cores."""

import dataclasses

from theory.experiments import Experiment
from theory.sweeps import DecaySweep

SWEEP = DecaySweep(n_max=32, draws_per_trial=200)

EXPERIMENT = Experiment(
    name="refine_decay",
    title="Refinement error decays exponentially in the number of demonstrations",
    sweep=SWEEP,
    quick=dataclasses.replace(SWEEP, n_max=24, draws_per_trial=100),
    trials=1000,
    figure="plot_refine_decay",
)
