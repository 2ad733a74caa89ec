"""Figure 1: naive fine-tuning is trapped above eps_P^2 eps_W^2 / (eps_P^2 + eps_W^2) for every lam,
GD step count and n, while refine-then-fit on the same axes goes below it. ~10 s on 2 cores."""

import dataclasses

from theory.experiments import Experiment
from theory.sweeps import LambdaSweep

SWEEP = LambdaSweep(ns=(40, 100, 400), n_icl=8)

EXPERIMENT = Experiment(
    name="ft_trapped",
    title="Fine-tuning on weak labels is trapped; refinement escapes",
    sweep=SWEEP,
    quick=dataclasses.replace(SWEEP, ns=(40, 100)),
    trials=1000,
    figure="plot_ft_trapped",
)
