"""Run an experiment end to end: validate, plan, run the stages not yet done, report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from w2s_jax.pipeline.artifacts import atomic_write_json, atomic_write_text
from w2s_jax.pipeline.config import ExperimentConfig, load_experiment
from w2s_jax.pipeline.plan import build_plan, validate
from w2s_jax.pipeline.report import PLAN, results_markdown, write_report
from w2s_jax.pipeline.run import RunContext
from w2s_jax.pipeline.stage import RECORDS, run_stages


def default_run_dir(config: ExperimentConfig) -> Path:
    """``runs/<experiment name>``."""
    return Path("runs") / config.name


def prepare(config: ExperimentConfig, run_dir: str | Path, *, show_progress: bool = True):
    """Validates the experiment and writes the run directory's plan; returns (run, stages)."""
    train, test = validate(config)
    run = RunContext(config, run_dir, train=train, test=test, show_progress=show_progress)
    stages, subjects = build_plan(config)
    plan = {
        "experiment": config.name, "task": config.task.name, "seed": config.seed,
        "metrics": [m for m in config.task.metric_names() if not m.startswith("_")], "higher_is_better": config.task.higher_is_better,
        "level": config.report.level, "bootstrap": config.report.bootstrap,
        "subjects": [{"name": s.name, "role": s.role, "method": s.method, "supervisor": s.supervisor,
                      "records": str((s.score_stage.directory(run) / RECORDS).relative_to(run.run_dir))}
                     for s in subjects],
    }
    if run.process_index == 0:
        if config.source and Path(config.source).is_file():
            atomic_write_text(run.run_dir / "experiment.toml", Path(config.source).read_text())
        atomic_write_json(run.run_dir / "experiment.json", config)
        atomic_write_json(run.run_dir / PLAN, plan)
    return run, stages


def run_experiment(config: ExperimentConfig | str | Path, *, run_dir: str | Path | None = None,
                   overrides: Sequence[str] = (), methods: Sequence[str] | None = None,
                   show_progress: bool = True, figures: bool = True,
                   log: Callable[[str], None] = print) -> dict:
    """Runs (or resumes) an experiment; returns the report's results.

    Arguments:
      config: an :class:`ExperimentConfig` or the path of an experiment file.
      run_dir: the run directory (default ``runs/<name>``).
      overrides, methods: ``--set`` items and a ``--methods`` list (for a file path).
    """
    if not isinstance(config, ExperimentConfig):
        config = load_experiment(config, overrides=overrides, methods=methods)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    run, stages = prepare(config, run_dir, show_progress=show_progress)
    log(f"w2s run {config.name}: {len(run.train)} train / {len(run.test)} test rows, "
        f"{len(stages)} stages -> {run_dir}")
    run_stages(stages, run, log=log)
    if run.process_index != 0:
        return {}
    results = write_report(run_dir, figures=figures)
    log(results_markdown(results))
    return results
