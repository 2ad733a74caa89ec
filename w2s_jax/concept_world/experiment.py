"""``w2s run`` for ``kind = "concept-world"``: one graph of stages in the shared store, then the report.

1. Setup stages (:mod:`.stages`): pre-train the strong and the weak decoder; per seed, the data and
   label files and the weak model fine-tuned on a few gold examples.
2. Per seed, the standard pipeline's stages (``w2s_jax.pipeline.build_plan``) of two experiments
   built with ``experiment_from_dict`` that point at those artifacts: ``main`` (the experiment's
   methods against the weak model and the controlled labellers of ``[supervisors]``; the weak
   decoder before fine-tuning is ``models.intermediate``, the middle hop of ``bootstrap``) and
   ``quality`` (``sweeps.quality_methods`` against noisy labellers of every ``sweeps.quality``
   level). Both are planned in the same graph, so a stage they share (``gold``'s labels and
   student, ``zero-shot``) has one key and is computed once per seed.
3. Per seed, the demonstrations and gamma sweeps.
4. The report over seeds (:mod:`.report`): ``results.json``, ``results.md``, ``figures/``, and
   ``concept_world.json``, from which ``w2s report RUN_DIR`` rebuilds them; each part's plan is
   ``seed-<s>/<part>/plan.json`` (the pipeline's report of it beside it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from w2s_jax.concept_world.config import ConceptWorldConfig, load_concept_world
from w2s_jax.concept_world.stages import (
    Pretrain,
    SeedData,
    Sweep,
    WeakFinetune,
    main_labellers,
    quality_labellers,
)
from w2s_jax.concept_world.world import World
from w2s_jax.pipeline import (
    PLAN,
    Split,
    Store,
    build_plan,
    default_store,
    dry_run_lines,
    experiment_from_dict,
    graph_order,
    load_split,
    make_resources,
    open_store,
    plan_record,
    run_stages,
    stage_table,
    write_report,
)
from w2s_jax.pipeline.artifacts import atomic_write_json

# methods.run of the main run when the file does not say: every method that fits this task
DEFAULT_METHODS = ("zero-shot", "naive", "icl-refine", "context-distill", "bootstrap", "gold")


def pipeline_dict(config: ConceptWorldConfig, *, name: str, seed: int, data_dir: Path, strong: Path,
                  weak_base: Path, weak_models: Sequence[str], label_files: Sequence[str],
                  methods: Sequence[str]) -> dict:
    """The standard experiment (as a parsed TOML document) of one pipeline part of one seed."""
    p = config.pipeline
    method_tables = {k: v for k, v in dict(p.get("methods", {})).items() if k != "run"}
    raw = {"name": name, "seed": seed, "task": {"name": "concept"},
           "data": {"train": str(data_dir / "train.jsonl"), "test": str(data_dir / "test.jsonl")},
           "models": {"batch_size": 64, "length_bucket": 16, **dict(p.get("models", {})),
                      "strong": str(strong), "weak": list(weak_models),
                      "weak_label_files": list(label_files), "intermediate": [str(weak_base)]},
           "methods": {**method_tables, "run": list(methods)},
           "generation": {"max_new_tokens": 2, **dict(p.get("generation", {}))}}
    for key in ("train", "report", "chunk_size"):
        if key in p:
            raw[key] = p[key]
    return raw


@dataclasses.dataclass
class ConceptGraph:
    """The experiment's stages, and what the report reads of them."""

    setup: list  # the setup stages
    parts: dict  # (seed, part) -> (experiment config, stages, plan)
    sweeps: dict  # (seed, kind) -> Sweep
    data: dict  # seed -> SeedData

    def stages(self) -> list:
        ordered = [*self.setup]
        for (seed, _part), (_config, stages, _plan) in self.parts.items():
            ordered += stages
        ordered += list(self.sweeps.values())
        return graph_order(ordered)


def concept_graph(config: ConceptWorldConfig, store: Store, methods: Sequence[str] | None = None) -> ConceptGraph:
    """The whole experiment as one graph of stages (nothing runs; keys are known up front)."""
    strong = Pretrain(name="pretrain/strong", world=config.world, model=config.strong, stream=0)
    weak_base = Pretrain(name="pretrain/weak", world=config.world, model=config.weak, stream=1)
    world = World(config.world)
    main_methods = list(methods or config.pipeline.get("methods", {}).get("run", DEFAULT_METHODS))
    generation = None
    setup_stages, parts, sweeps, data = [strong, weak_base], {}, {}, {}
    for seed in config.seeds:
        d = SeedData(name=f"data/seed-{seed}", world=config.world, split=config.split, seed=seed,
                     supervisors=config.supervisors, quality=tuple(config.sweeps.quality))
        weak = WeakFinetune(name=f"weak-model/seed-{seed}", base=weak_base, data=d,
                            weak_finetune=config.weak_finetune, seed=seed)
        setup_stages += [d, weak]
        data[seed] = d
        setup = d.setup(world)
        data_dir = store.directory(d)

        def files(labellers):
            return [str(data_dir / "labellers" / f"{labeller.name}.jsonl") for labeller in labellers]

        plans = {"main": (main_methods, [str(weak.model_dir(store))] if config.supervisors.weak_model else [],
                          files(main_labellers(config, setup)))}
        if config.sweeps.quality:
            plans["quality"] = (list(config.sweeps.quality_methods), [], files(quality_labellers(config)))
        made_by = {str(strong.model_dir(store)): strong.key, str(weak_base.model_dir(store)): weak_base.key,
                   str(weak.model_dir(store)): weak.key}
        for part, (names, weak_models, label_files) in plans.items():
            experiment = experiment_from_dict(
                pipeline_dict(config, name=f"{config.name}-{part}-seed{seed}", seed=seed, data_dir=data_dir,
                              strong=strong.model_dir(store), weak_base=weak_base.model_dir(store),
                              weak_models=weak_models, label_files=label_files, methods=names),
                source=config.source)
            generation = experiment.generation
            train = Split("train", load=lambda e=experiment: load_split(e, "train"), made_by=d.key)
            test = Split("test", load=lambda e=experiment: load_split(e, "test"), made_by=d.key)
            stages, subjects = build_plan(experiment, train, test,
                                          made_by={**made_by, **{f: d.key for f in label_files}})
            parts[(seed, part)] = (experiment, stages, plan_record(experiment, subjects, store))
        for kind, on in (("demos", config.sweeps.demos), ("gamma", config.sweeps.gamma)):
            if on:
                sweeps[(seed, kind)] = Sweep(name=f"sweep-{kind}/seed-{seed}", kind=kind, strong=strong, data=d,
                                             sweeps=config.sweeps, generation=generation, seed=seed)
    return ConceptGraph(setup_stages, parts, sweeps, data)


def run_concept_world(path: str | Path | ConceptWorldConfig, *, out: str | Path | None = None, store: str | Path | None = None,
                      overrides: Sequence[str] = (), quick: bool = False, methods: Sequence[str] | None = None,
                      show_progress: bool = True, figures: bool = True, dry_run: bool = False,
                      log: Callable[[str], None] = print, executed: list | None = None) -> dict:
    """Runs (or resumes) a concept-world experiment; returns the aggregate results.

    Arguments:
      path: the experiment file (``kind = "concept-world"``), or its loaded config.
      out: the run directory (default ``runs/<name>``); store: the store (default beside it).
      overrides: ``--set`` items; ``quick``: the ``--quick`` preset first.
      methods: replaces the main run's ``methods.run``.
      dry_run: list the stages' states; run nothing.
      executed: collects the stages this call computed.
    """
    from w2s_jax.concept_world.report import report_meta, write_concept_report

    config = path if isinstance(path, ConceptWorldConfig) else load_concept_world(path, overrides=overrides,
                                                                                 quick=quick)
    run_dir = Path(out) if out is not None else Path("runs") / config.name
    opened = open_store(run_dir, store if store is not None else default_store(run_dir))
    graph = concept_graph(config, opened, methods)  # the pipeline tables are checked here
    stages = graph.stages()
    first = graph.parts[(config.seeds[0], "main")][0]
    res = make_resources(first, opened, show_progress=show_progress)
    if dry_run:
        for line in dry_run_lines(stages, opened):
            log(line)
        return {}
    log(f"w2s run {config.name} (concept world): seeds {list(config.seeds)}, {len(stages)} stages -> "
        f"{run_dir} (store {opened.root})")
    run_stages(stages, res, log=log, executed=executed)
    runs: dict = {}
    for (seed, part), (experiment, _stages, plan) in graph.parts.items():
        directory = run_dir / f"seed-{seed}" / part
        atomic_write_json(directory / PLAN, plan)
        write_report(directory, figures=figures)
        runs.setdefault(part, {})[seed] = directory
    for (seed, kind), stage in graph.sweeps.items():
        runs.setdefault(f"sweep-{kind}", {})[seed] = opened.directory(stage)
    atomic_write_json(run_dir / "stages.json", {"store": str(opened.root), "stages": stage_table(stages, opened)})
    return write_concept_report(run_dir, report_meta(config), runs,
                                data={s: opened.directory(d) for s, d in graph.data.items()},
                                figures=figures, log=log)

