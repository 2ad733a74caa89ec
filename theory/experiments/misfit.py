"""Figure 6: a weak bias at angle theta to span(B), from outside it (90 deg, the biased supervisor)
to inside it towards a rival concept (0 deg). A linear probe on the concept features gains exactly
its misfit with the weak labels (Charikar, Pabbaraju and Shiragur, NeurIPS 2024) and escapes the
fine-tuning trap iff the bias leaves span(B); full fine-tuning is trapped at every theta; refinement
escapes while the target is identifiable. ~15 s on 2 cores."""

import dataclasses

from theory.experiments import Experiment
from theory.misfit import MisfitSweep

SWEEP = MisfitSweep(thetas=(0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0), ns=(25, 100), n_icl=8)

EXPERIMENT = Experiment(
    name="misfit",
    title="Misfit: a probe escapes iff the weak bias leaves span(B); full fine-tuning never does",
    sweep=SWEEP,
    quick=dataclasses.replace(SWEEP, thetas=(0.0, 30.0, 60.0, 90.0)),
    trials=400,
    figure="plot_misfit",
)
