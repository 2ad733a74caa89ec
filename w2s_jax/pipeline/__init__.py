"""The weak-to-strong pipeline on language models: ``w2s run EXPERIMENT.toml``.

An experiment file (``w2s_jax.pipeline.config``) names a task, its data, a strong model, one or
more weak supervisors and the label methods to compare. The run is a graph of hashed,
resumable stages (``stage``, ``plan``) kept in a store shared by every run (``store``): weak labels, each method's training labels, fine-tuning,
test predictions, scores; then the report (``report``) with intervals and PGR. Methods live in
``w2s_jax.methods`` and tasks in ``w2s_jax.tasks``; the pipeline generates with
``w2s_jax.inference``, trains with ``w2s_jax.train`` and reports with ``w2s_jax.core.metrics``.
"""

from w2s_jax.pipeline.config import ExperimentConfig, ExperimentError, experiment_from_dict, load_experiment
from w2s_jax.pipeline.plan import build_plan, load_split, validate
from w2s_jax.pipeline.refs import Inference, LabelFile, Model, Split, Supervisor
from w2s_jax.pipeline.report import PLAN, build_results, format_stat, write_report
from w2s_jax.pipeline.run import make_resources
from w2s_jax.pipeline.runner import (dry_run_lines, open_store, plan_record, prepare, run_experiment, stage_directories,
                                     stage_table)
from w2s_jax.pipeline.stage import ChunkedStage, Resources, Stage, graph_order, run_stages
from w2s_jax.pipeline.store import Store, default_store

__all__ = ["PLAN", "ChunkedStage", "ExperimentConfig", "ExperimentError", "Inference", "LabelFile", "Model",
           "Resources", "Split", "Stage", "Store", "Supervisor", "build_plan", "build_results",
           "default_store", "dry_run_lines", "experiment_from_dict", "format_stat", "graph_order", "load_experiment",
           "load_split", "make_resources", "open_store", "plan_record", "prepare", "run_experiment",
           "run_stages", "stage_directories", "stage_table", "validate", "write_report"]
