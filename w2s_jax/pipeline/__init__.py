"""The weak-to-strong pipeline on language models: ``w2s run EXPERIMENT.toml``.

An experiment file (``w2s_jax.pipeline.config``) names a task, its data, a strong model, one or
more weak supervisors and the label methods to compare. The run is a sequence of hashed,
resumable stages (``stage``, ``plan``): weak labels, each method's training labels, fine-tuning,
test predictions, scores; then the report (``report``) with intervals and PGR. Methods live in
``w2s_jax.methods`` and tasks in ``w2s_jax.tasks``; the pipeline generates with
``w2s_jax.inference``, trains with ``w2s_jax.train`` and reports with ``w2s_jax.core.metrics``.
"""

from w2s_jax.pipeline.config import ExperimentConfig, ExperimentError, experiment_from_dict, load_experiment
from w2s_jax.pipeline.report import build_results, write_report
from w2s_jax.pipeline.runner import prepare, run_experiment

__all__ = ["ExperimentConfig", "ExperimentError", "build_results", "experiment_from_dict",
           "load_experiment", "prepare", "run_experiment", "write_report"]
