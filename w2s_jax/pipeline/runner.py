"""Run an experiment end to end: validate, plan, run the stages not yet done, report.

The run directory holds what people read: ``experiment.toml`` (as given), ``experiment.json`` (as
resolved), ``plan.json`` (the report's subjects and where their scores are), ``stages.json`` (every
stage the run used: name, key, store directory), ``results.*`` and ``figures/``. The stages
themselves live in the store (``w2s_jax.pipeline.store``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from w2s_jax.pipeline.artifacts import atomic_write_json, atomic_write_text
from w2s_jax.pipeline.config import ExperimentConfig, ExperimentError, load_experiment
from w2s_jax.pipeline.plan import build_plan, validate
from w2s_jax.pipeline.refs import Split
from w2s_jax.pipeline.report import PLAN, results_markdown, write_report
from w2s_jax.pipeline.run import make_resources
from w2s_jax.pipeline.stage import RECORDS, Stage, graph_order, run_stages
from w2s_jax.pipeline.store import Store, default_store

STAGES = "stages.json"


def default_run_dir(config: ExperimentConfig) -> Path:
    """``runs/<experiment name>``."""
    return Path("runs") / config.name


def open_store(run_dir: str | Path, store: str | Path | None = None) -> Store:
    """The store of a run (default: :func:`~w2s_jax.pipeline.store.default_store`)."""
    root = Path(store) if store is not None else default_store(run_dir)
    if root.absolute() == Path(run_dir).absolute():
        raise ExperimentError(f"{run_dir}: the run directory cannot be the store itself")
    return Store(root)


def stage_keys(stages: Sequence[Stage], source: str) -> None:
    """Computes every stage's key (reading each model's files once): a model that cannot be read
    is an :class:`ExperimentError` naming it, before any stage runs."""
    for stage in stages:
        try:
            stage.key  # noqa: B018
        except (OSError, ValueError) as error:
            raise ExperimentError(f"{source}: {stage.name}: {error}") from None


def stage_table(stages: Sequence[Stage], store: Store) -> list[dict]:
    """What ``stages.json`` records of each stage."""
    return [{"name": s.name, "kind": type(s).__name__, "key": s.key, "directory": str(store.directory(s))}
            for s in stages]


def stage_directories(run_dir: str | Path) -> dict[str, Path]:
    """The store directory of every stage a run used, by stage name (from ``stages.json``)."""
    from w2s_jax.pipeline.artifacts import read_json

    path = Path(run_dir) / STAGES
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {STAGES} (not a run directory of `w2s run`)")
    return {s["name"]: Path(s["directory"]) for s in read_json(path)["stages"]}


def plan_record(config: ExperimentConfig, subjects, store: Store) -> dict:
    """``plan.json``: what the report reads (its subjects and where their records are)."""
    def finetune_of(subject):
        return getattr(subject.score_stage.predict.answerer, "finetune", None)

    weak_labels = {}
    for subject in subjects:
        finetune = finetune_of(subject)
        if finetune is not None and finetune.labels.weak is not None:
            weak = finetune.labels.weak
            weak_labels[weak.supervisor.name] = str(store.directory(weak) / RECORDS)
    return {
        "experiment": config.name, "task": config.task.name, "seed": config.seed,
        "task_options": config.task.options,  # the report rebuilds the task to read stated answers
        "metrics": [m for m in config.task.metric_names() if not m.startswith("_")],
        "higher_is_better": config.task.higher_is_better,
        "level": config.report.level, "bootstrap": config.report.bootstrap,
        "common_items": config.report.common_items,
        "exact": not config.task.needs_judge,  # misfit compares stated answers, else scores
        "subjects": [{"name": s.name, "role": s.role, "method": s.method, "supervisor": s.supervisor,
                      "records": str(store.directory(s.score_stage) / RECORDS),
                      "predictions": str(store.directory(s.score_stage.predict) / RECORDS)} for s in subjects],
        "training": {s.name: str(store.directory(finetune_of(s))) for s in subjects if finetune_of(s)},
        "weak_labels": weak_labels,
    }


def write_run_record(run_dir: str | Path, config: ExperimentConfig, plan: dict, stages: Sequence[Stage],
                     store: Store) -> None:
    """Writes the run directory's ``experiment.toml``, ``experiment.json``, ``plan.json`` and
    ``stages.json``."""
    run_dir = Path(run_dir)
    if config.source and Path(config.source).is_file():
        atomic_write_text(run_dir / "experiment.toml", Path(config.source).read_text())
    atomic_write_json(run_dir / "experiment.json", config)
    atomic_write_json(run_dir / PLAN, plan)
    atomic_write_json(run_dir / STAGES, {"store": str(store.root), "stages": stage_table(stages, store)})


def prepare(config: ExperimentConfig, run_dir: str | Path, *, store: str | Path | None = None,
            show_progress: bool = True, write: bool = True):
    """Validates the experiment, computes its stage keys and (with ``write``) writes the run
    directory's record; returns (resources, stages in run order)."""
    train, test = validate(config)
    opened = open_store(run_dir, store)
    stages, subjects = build_plan(config, Split("train", tuple(train)), Split("test", tuple(test)))
    stages = graph_order(stages)
    stage_keys(stages, config.source)
    res = make_resources(config, opened, show_progress=show_progress)
    if res.process_count > 1:
        from w2s_jax.processes import check_shared

        check_shared(opened.root)  # else each host would merge only the parts it can see
    res.train_count, res.test_count = len(train), len(test)
    if write and res.process_index == 0:
        write_run_record(run_dir, config, plan_record(config, subjects, opened), stages, opened)
    return res, stages


def dry_run_lines(stages: Sequence[Stage], store: Store) -> list[str]:
    """Each stage's state (done, n of m units, to run) and the models it would load."""
    lines = []
    for stage in stages:
        if stage.is_done(store):
            state = "done"
        else:
            progress = stage.progress(store) if store.directory(stage).is_dir() else None
            state = f"{progress[0]} of {progress[1]} units" if progress else "to run"
        models = "" if state == "done" or not stage.models() else f"  (loads {', '.join(stage.models())})"
        lines.append(f"[{state}] {stage.name}{models}")
    todo = sorted({m for s in stages if not s.is_done(store) for m in s.models()})
    lines.append(f"{sum(not s.is_done(store) for s in stages)} of {len(stages)} stages to run; "
                 f"models to load: {', '.join(todo) if todo else 'none'}")
    return lines


def run_experiment(config: ExperimentConfig | str | Path, *, run_dir: str | Path | None = None,
                   store: str | Path | None = None, overrides: Sequence[str] = (),
                   methods: Sequence[str] | None = None, show_progress: bool = True, figures: bool = True,
                   dry_run: bool = False, log: Callable[[str], None] = print,
                   executed: list | None = None) -> dict:
    """Runs (or resumes) an experiment; returns the report's results.

    Arguments:
      config: an :class:`ExperimentConfig` or the path of an experiment file.
      run_dir: the run directory (default ``runs/<name>``); store: the store (default beside it).
      overrides, methods: ``--set`` items and a ``--methods`` list (for a file path).
      dry_run: print the stages' states and the models they would load; run and load nothing.
      executed: collects the stages this call computed.
    """
    if not isinstance(config, ExperimentConfig):
        config = load_experiment(config, overrides=overrides, methods=methods)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    res, stages = prepare(config, run_dir, store=store, show_progress=show_progress, write=not dry_run)
    if dry_run:
        for line in dry_run_lines(stages, res.store):
            log(line)
        return {}
    log(f"w2s run {config.name}: {res.train_count} train / {res.test_count} test rows, "
        f"{len(stages)} stages -> {run_dir} (store {res.store.root})")
    run_stages(stages, res, log=log, executed=executed)
    if res.process_index != 0:
        return {}
    results = write_report(run_dir, figures=figures)
    log(results_markdown(results))
    return results
