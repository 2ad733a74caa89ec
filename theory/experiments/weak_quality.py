"""Figure 3: risk and PGR vs the weak supervisor's quality parameter (delta, eta or gamma of the
setting's supervisor, times 0.25 to 2), for the weak model, the pre-trained
strong model, the best fine-tuning, refinement and the gold ceiling. ~10 s on 2 cores."""

import dataclasses

from theory.experiments import Experiment
from theory.sweeps import WeakQualitySweep

SWEEP = WeakQualitySweep(scales=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0), n=200, n_icl=8)

EXPERIMENT = Experiment(
    name="weak_quality",
    title="Weak-quality sweep: refinement recovers more of the gap than fine-tuning",
    sweep=SWEEP,
    quick=dataclasses.replace(SWEEP, scales=(0.5, 1.0, 2.0), n=100),
    trials=1000,
    figure="plot_weak_quality",
)
