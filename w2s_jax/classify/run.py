"""Run a classification experiment: plan, run the stages not yet done, write the run directory.

The run directory holds what people read: ``experiment.toml`` (as given), ``stages.json`` (every
stage: name, key, store directory), ``classification.json`` (the report's subjects and label sets
and where their probabilities are, from which ``w2s report`` rebuilds the report),
``results.json``, ``results.md`` and ``figures/``. The stages live in the shared store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from w2s_jax.classify.config import ClassificationConfig
from w2s_jax.classify.graph import classification_graph
from w2s_jax.classify.stages_strong import ProbeLabels
from w2s_jax.pipeline import ExperimentError, Resources, dry_run_lines, open_store, run_stages, stage_table
from w2s_jax.pipeline.artifacts import atomic_write_json, atomic_write_text
from w2s_jax.pipeline.models import ModelPool
from w2s_jax.pipeline.stage import RECORDS

INDEX = "classification.json"


def test_file(stage, store) -> str:
    """Where a subject's test probabilities are (``{"index", "prob"}`` rows)."""
    return str(store.directory(stage) / ("test.jsonl" if isinstance(stage, ProbeLabels) else RECORDS))


def index_record(config: ClassificationConfig, graph, store) -> dict:
    """``classification.json``: what the report reads."""
    return {
        "experiment": config.name, "dataset": config.data.format.name, "seeds": list(config.seeds),
        "weak": list(config.models.weak), "strong": list(config.models.strong),
        "losses": [loss.name for loss in config.losses], "repair": [r.name for r in config.repair],
        "icl_demos": config.icl.demos, "level": config.report.level, "bootstrap": config.report.bootstrap,
        "predictions": "concept-world" if config.concept_world is not None else None,
        "items": {str(seed): str(store.directory(items)) for seed, items in graph.items.items()},
        "subjects": [{"name": s.name, "role": s.role, "seed": s.seed, "weak": s.weak, "strong": s.strong,
                      "probs": test_file(s.stage, store)} for s in graph.subjects],
        "label_sets": [{"name": s.name, "seed": s.seed, "weak": s.weak, "strong": s.strong,
                        "labels": str(store.directory(s.stage) / RECORDS)} for s in graph.label_sets],
    }


def keyed_graph(config: ClassificationConfig, store):
    """The graph, every stage's key computed (a model or file that cannot be read is an
    ExperimentError naming the stage, before anything runs)."""
    try:
        graph = classification_graph(config, store)
    except ValueError as error:
        raise ExperimentError(str(error)) from None
    for stage in graph.stages:
        try:
            stage.key  # noqa: B018
        except (OSError, ValueError) as error:
            raise ExperimentError(f"{config.source}: {stage.name}: {error}") from None
    return graph


def preflight(config: ClassificationConfig) -> None:
    """Every seed's items made in memory before anything is written or loaded: a missing file, a
    row without a needed field, too few items, a test item among the training items are one
    ExperimentError naming the file, the row and the field."""
    if config.concept_world is not None:  # the items are made by a stage of the run
        return
    for seed, items in classification_graph(config).items.items():
        try:
            items.parts()
        except (OSError, ValueError) as error:
            raise ExperimentError(f"{config.source}: seed {seed}: {error}") from None


def resources(config: ClassificationConfig, store, *, show_progress: bool = True) -> Resources:
    """A pool of inference models, chunks of ``chunk_size`` rows, and with ``models.mesh`` the mesh
    of this process's devices (classifiers trained FSDP on it, inference batches split over it)."""
    m = config.models
    mesh = rules = None
    if m.mesh is not None:
        import jax

        from w2s_jax.parallel import ShardingRules, make_mesh

        mesh, rules = make_mesh(m.mesh, devices=jax.local_devices()), ShardingRules.fsdp()
    pool = ModelPool(dtype=m.dtype, batch_size=m.batch_size, length_bucket=64, max_loaded=2, mesh=mesh, rules=rules)
    return Resources(store, pool, chunk_size=config.chunk_size, mesh=mesh, train_mesh=mesh, rules=rules,
                     show_progress=show_progress)


def run_classification(config: ClassificationConfig, *, run_dir: str | Path | None = None,
                       store: str | Path | None = None, show_progress: bool = True, figures: bool = True,
                       dry_run: bool = False, log: Callable[[str], None] = print,
                       executed: list | None = None) -> dict:
    """Runs (or resumes) a classification experiment; returns the report's results.

    Arguments:
      config: the loaded experiment (``w2s_jax.classify.config.load_classification``).
      run_dir: the run directory (default ``runs/<name>``); store: the store (default beside it).
      dry_run: print every stage's state and the models it would load; run and load nothing.
      executed: collects the stages this call computed.
    """
    from w2s_jax.classify.report import results_markdown, write_report

    import jax

    if jax.process_count() > 1:  # its whole-stage steps (items, classifiers, probes) are not split
        raise ExperimentError(f"{config.source}: a classification run uses one process ({jax.process_count()} "
                              "joined); shard it over this machine's devices with models.mesh instead")
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / config.name
    opened = open_store(run_dir, store)
    graph = keyed_graph(config, opened)
    if dry_run:
        for line in dry_run_lines(graph.stages, opened):
            log(line)
        return {}
    res = resources(config, opened, show_progress=show_progress)
    if config.source and Path(config.source).is_file():
        atomic_write_text(run_dir / "experiment.toml", Path(config.source).read_text())
    atomic_write_json(run_dir / "stages.json", {"store": str(opened.root), "stages": stage_table(graph.stages, opened)})
    atomic_write_json(run_dir / INDEX, index_record(config, graph, opened))
    log(f"w2s run {config.name} (classification, {config.data.format.name}): seeds {list(config.seeds)}, "
        f"{len(config.models.weak)} weak x {len(config.models.strong)} strong, {len(graph.stages)} stages "
        f"-> {run_dir} (store {opened.root})")
    run_stages(graph.stages, res, log=log, executed=executed)
    results = write_report(run_dir, figures=figures)
    log(results_markdown(results))
    return results
