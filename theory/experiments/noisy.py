"""Figure 4: a noisy (unbiased) supervisor. Fine-tuning is consistent but pays the variance
sigma_w^2 d / (n - d - 1); refinement replaces noisy labels by posterior means. ~10 s on 2 cores."""

import dataclasses

from theory.experiments import Experiment
from theory.sweeps import NoisySweep

SWEEP = NoisySweep(eta=2.0, ns=(30, 50, 100, 200, 400), n_icl=8)

EXPERIMENT = Experiment(
    name="noisy",
    title="Noisy supervisor: fine-tuning pays variance, refinement denoises",
    sweep=SWEEP,
    quick=dataclasses.replace(SWEEP, ns=(30, 60, 120)),
    trials=1000,
    figure="plot_noisy",
)
