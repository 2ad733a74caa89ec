"""``w2s run`` for ``kind = "concept-world"``: one graph of stages in the shared store, then the report.

1. Per world, the strong decoder is pre-trained in chunks until the gate passes (:mod:`.gate`).
2. Setup stages (:mod:`.stages`): pre-train the weak and the intermediate decoder and measure their
   in-context curves; per (world, seed), the data and label files and the weak model fine-tuned on
   the seed's gold pool.
3. Per (world, seed), the standard pipeline's stages (``w2s_jax.pipeline.build_plan``) of two experiments
   built with ``experiment_from_dict`` that point at those artifacts: ``main`` (the experiment's
   methods against the weak model and the controlled labellers of ``[supervisors]``; the
   intermediate decoder is ``models.intermediate``, the middle hop of ``bootstrap``) and
   ``quality`` (``sweeps.quality_methods`` against noisy labellers of every ``sweeps.quality``
   level). Both are planned in the same graph, so a stage they share (``gold``'s labels and
   student, ``zero-shot``) has one key and is computed once per seed.
4. Per (world, seed), the refined-label sweeps.
5. The report over seeds (:mod:`.report`): ``results.json``, ``results.md``, ``figures/``, and
   ``concept_world.json``, from which ``w2s report RUN_DIR`` rebuilds them; each part's plan is
   ``world-<w>/seed-<s>/<part>/plan.json`` (the pipeline's report of it beside it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from w2s_jax.concept_world.config import ConceptWorldConfig, load_concept_world
from w2s_jax.concept_world.gate import verdict
from w2s_jax.concept_world.pretrain import PretrainConfig
from w2s_jax.concept_world.stages import (
    Curve,
    Pretrain,
    SeedData,
    Sweep,
    WeakFinetune,
    main_labellers,
    quality_labellers,
    size_file,
)
from w2s_jax.concept_world.world import World, WorldConfig
from w2s_jax.pipeline import (
    PLAN,
    ExperimentError,
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
from w2s_jax.pipeline.stage import RECORDS

# methods.run of the main run when the file does not say: every method that fits this task
DEFAULT_METHODS = ("zero-shot", "naive", "icl-refine", "context-distill", "bootstrap", "gold")


def pipeline_dict(config: ConceptWorldConfig, *, name: str, seed: int, data_dir: Path, strong: Path,
                  intermediate: Path, weak_models: Sequence[str], label_files: Sequence[str],
                  methods: Sequence[str], train_file: str = "train.jsonl") -> dict:
    """The standard experiment (as a parsed TOML document) of one pipeline part of one seed."""
    p = config.pipeline
    method_tables = {k: v for k, v in dict(p.get("methods", {})).items() if k != "run"}
    raw = {"name": name, "seed": seed, "task": {"name": "concept"},
           "data": {"train": str(data_dir / train_file), "test": str(data_dir / "test.jsonl")},
           "models": {"batch_size": 64, "length_bucket": 16, **dict(p.get("models", {})),
                      "strong": str(strong), "weak": list(weak_models),
                      "weak_label_files": list(label_files), "intermediate": [str(intermediate)]},
           "methods": {**method_tables, "run": list(methods)},
           "generation": {"max_new_tokens": 2, **dict(p.get("generation", {}))}}
    for key in ("train", "report", "chunk_size"):
        if key in p:
            raw[key] = p[key]
    return raw


def world_models(config: ConceptWorldConfig, w: int) -> tuple[WorldConfig, dict[str, PretrainConfig]]:
    """World ``w``'s settings and its three decoders' (pre-training seeds offset by ``w``)."""
    world = dataclasses.replace(config.world, seed=w)
    return world, {name: dataclasses.replace(getattr(config, name), seed=getattr(config, name).seed + w)
                   for name in ("strong", "weak", "intermediate")}


def strong_chunk(config: ConceptWorldConfig, w: int, chunk: int) -> Pretrain:
    """The ``chunk``-th (1-based) pre-training chunk of world ``w``'s strong model."""
    world, models = world_models(config, w)
    stage = None
    for c in range(1, chunk + 1):
        stage = Pretrain(name=f"pretrain/strong/world-{w}" + (f"/chunk-{c}" if c > 1 else ""), world=world,
                         model=models["strong"], stream=0, previous=stage)
    return stage


def gate_curve(config: ConceptWorldConfig, model: Pretrain, label: str) -> Curve:
    """The in-context curve of ``model`` on the gate's held-out prompts."""
    return Curve(name=f"curve/{label}", model=model, demos=tuple(config.gate.demos), prompts=config.gate.prompts)


def pass_gate(config: ConceptWorldConfig, w: int, res, log: Callable[[str], None] = print,
              executed: list | None = None) -> tuple[Pretrain, list[dict]]:
    """Pre-trains world ``w``'s strong model chunk by chunk until the gate passes or
    ``gate.max_chunks`` are spent; returns the last chunk and every chunk's gate record."""
    records = []
    for chunk in range(1, config.gate.max_chunks + 1):
        stage = strong_chunk(config, w, chunk)
        curve = gate_curve(config, stage, f"strong/world-{w}/chunk-{chunk}")
        run_stages([stage, curve], res, log=log, executed=executed)
        result = curve.result(res.store)
        records.append({"chunk": chunk, **result, **verdict(result["rows"], config.gate.tolerance)})
        if records[-1]["passed"]:
            break
    return stage, records


@dataclasses.dataclass
class ConceptGraph:
    """The experiment's stages, and what the report reads of them."""

    setup: list  # the setup stages
    parts: dict  # (world, seed, part) -> (experiment config, stages, plan, subjects)
    sweeps: dict  # (world, seed, kind) -> Sweep
    data: dict  # (world, seed) -> SeedData
    curves: dict  # (world, "intermediate") -> Curve

    def stages(self) -> list:
        ordered = [*self.setup, *self.curves.values()]
        for _config, stages, _plan, _subjects in self.parts.values():
            ordered += stages
        ordered += list(self.sweeps.values())
        return graph_order(ordered)


def concept_graph(config: ConceptWorldConfig, store: Store, methods: Sequence[str] | None = None,
                  strong_of: dict | None = None) -> ConceptGraph:
    """The whole experiment as one graph of stages (nothing runs; keys are known up front).
    ``strong_of``: each world's strong pre-training stage (default its first chunk)."""
    main_methods = list(methods or config.pipeline.get("methods", {}).get("run", DEFAULT_METHODS))
    generation = None
    setup_stages, parts, sweeps, data, curves = [], {}, {}, {}, {}
    for w in config.worlds:
        world_config, models = world_models(config, w)
        strong = (strong_of or {}).get(w) or strong_chunk(config, w, 1)
        weak_base = Pretrain(name=f"pretrain/weak/world-{w}", world=world_config, model=models["weak"], stream=1)
        middle = Pretrain(name=f"pretrain/intermediate/world-{w}", world=world_config,
                          model=models["intermediate"], stream=2)
        setup_stages += [strong, weak_base, middle]
        curves[(w, "strong")] = gate_curve(config, strong, f"strong/world-{w}/chunk-{strong.chunk}")
        curves[(w, "intermediate")] = gate_curve(config, middle, f"intermediate/world-{w}")
        curves[(w, "weak")] = gate_curve(config, weak_base, f"weak/world-{w}")
        world = World(world_config)
        for seed in config.seeds:
            d = SeedData(name=f"data/world-{w}/seed-{seed}", world=world_config, split=config.split, seed=seed,
                         supervisors=config.supervisors, quality=tuple(config.sweeps.quality),
                         sizes=tuple(config.sweeps.sizes), size_eta=config.sweeps.size_eta)
            weak = WeakFinetune(name=f"weak-model/world-{w}/seed-{seed}", base=weak_base, data=d,
                                weak_finetune=config.weak_finetune, seed=seed)
            setup_stages += [d, weak]
            data[(w, seed)] = d
            setup = d.setup(world)
            data_dir = store.directory(d)

            def files(labellers, data_dir=data_dir):
                return [str(data_dir / "labellers" / f"{labeller.name}.jsonl") for labeller in labellers]

            plans = {"main": (main_methods, [str(weak.model_dir(store))] if config.supervisors.weak_model else [],
                              files(main_labellers(config, setup)), "train.jsonl")}
            if config.sweeps.quality:
                plans["quality"] = (list(config.sweeps.quality_methods), [], files(quality_labellers(config)),
                                    "train.jsonl")
            for m in config.sweeps.sizes:
                plans[f"size-{m}"] = (list(config.sweeps.quality_methods), [],
                                      [str(data_dir / "labellers" / size_file(m, config.sweeps.size_eta))],
                                      f"train-{m}.jsonl")
            made_by = {str(strong.model_dir(store)): strong.key, str(weak_base.model_dir(store)): weak_base.key,
                       str(middle.model_dir(store)): middle.key, str(weak.model_dir(store)): weak.key}
            for part, (names, weak_models, label_files, train_file) in plans.items():
                experiment = experiment_from_dict(
                    pipeline_dict(config, name=f"{config.name}-{part}-world{w}-seed{seed}", seed=seed,
                                  data_dir=data_dir, strong=strong.model_dir(store),
                                  intermediate=middle.model_dir(store), weak_models=weak_models,
                                  label_files=label_files, methods=names, train_file=train_file),
                    source=config.source)
                generation = experiment.generation
                train = Split("train", load=lambda e=experiment: load_split(e, "train"), made_by=d.key)
                test = Split("test", load=lambda e=experiment: load_split(e, "test"), made_by=d.key)
                stages, subjects = build_plan(experiment, train, test,
                                              made_by={**made_by, **{f: d.key for f in label_files}})
                parts[(w, seed, part)] = (experiment, stages, plan_record(experiment, subjects, store), subjects)
            for kind, on in (("demos", config.sweeps.demos), ("gamma", config.sweeps.gamma),
                             ("gamma-rates", config.sweeps.gamma_rates)):
                if on:
                    sweeps[(w, seed, kind)] = Sweep(name=f"sweep-{kind}/world-{w}/seed-{seed}", kind=kind,
                                                    strong=strong, data=d, sweeps=config.sweeps,
                                                    generation=generation, seed=seed)
    return ConceptGraph(setup_stages, parts, sweeps, data, curves)


def predictions_path(store: Store, subject) -> str:
    """Where a subject's test predictions are (``{"index", "prediction"}`` rows)."""
    return str(store.directory(subject.score_stage.predict) / RECORDS)


def run_concept_world(path: str | Path | ConceptWorldConfig, *, out: str | Path | None = None, store: str | Path | None = None,
                      overrides: Sequence[str] = (), quick: bool = False, methods: Sequence[str] | None = None,
                      show_progress: bool = True, figures: bool = True, dry_run: bool = False,
                      log: Callable[[str], None] = print, executed: list | None = None) -> dict:
    """Runs (or resumes) a concept-world experiment; returns the aggregate results.

    The strong model of each world is pre-trained first, chunk by chunk, until the gate passes
    (:func:`pass_gate`); a world that fails it stops the run (``gate.enforce``) or is run and
    reported as a smoke test. Then the rest of the graph runs and the report is written.

    Arguments:
      path: the experiment file (``kind = "concept-world"``), or its loaded config.
      out: the run directory (default ``runs/<name>``); store: the store (default beside it).
      overrides: ``--set`` items; ``quick``: the ``--quick`` preset first.
      methods: replaces the main run's ``methods.run``.
      dry_run: list the stages' states (the strong models' first chunk); run nothing.
      executed: collects the stages this call computed.
    """
    from w2s_jax.concept_world.report import report_meta, write_concept_report

    config = path if isinstance(path, ConceptWorldConfig) else load_concept_world(path, overrides=overrides,
                                                                                 quick=quick)
    run_dir = Path(out) if out is not None else Path("runs") / config.name
    opened = open_store(run_dir, store if store is not None else default_store(run_dir))
    graph = concept_graph(config, opened, methods)  # the pipeline tables are checked here
    first = next(iter(graph.parts.values()))[0]
    res = make_resources(first, opened, show_progress=show_progress)
    if dry_run:
        for line in dry_run_lines(graph.stages(), opened):
            log(line)
        return {}
    log(f"w2s run {config.name} (concept world): worlds {list(config.worlds)} x seeds {list(config.seeds)} "
        f"-> {run_dir} (store {opened.root})")
    gate, strong_of = {}, {}
    for w in config.worlds:
        strong_of[w], gate[w] = pass_gate(config, w, res, log=log, executed=executed)
        if not gate[w][-1]["passed"]:
            message = (f"world {w}: the strong model missed the pre-training gate after {len(gate[w])} chunk(s) "
                       f"({strong_of[w].total_steps} steps): in-context accuracy {gate[w][-1]['gap']:.3f} below "
                       f"Bayes-optimal at n = {gate[w][-1]['worst_n']} (tolerance {config.gate.tolerance})")
            if config.gate.enforce:
                atomic_write_json(run_dir / "gate.json", {"passed": False, "worlds": {str(k): v for k, v in gate.items()}})
                raise GateFailed(message + "; stopping (gate.json)")
            log(message + "; running on as a smoke test (gate.enforce = false)")
    atomic_write_json(run_dir / "gate.json", {"passed": all(records[-1]["passed"] for records in gate.values()),
                                              "worlds": {str(k): v for k, v in gate.items()}})
    graph = concept_graph(config, opened, methods, strong_of)
    stages = graph.stages()
    run_stages(stages, res, log=log, executed=executed)
    runs: dict = {}
    for (w, seed, part), (experiment, _stages, plan, subjects) in graph.parts.items():
        directory = run_dir / f"world-{w}" / f"seed-{seed}" / part
        plan = {**plan, "predictions": {s.name: predictions_path(opened, s) for s in subjects}}
        atomic_write_json(directory / PLAN, plan)
        write_report(directory, figures=figures)
        runs.setdefault(part, {})[f"{w}/{seed}"] = directory
    for (w, seed, kind), stage in graph.sweeps.items():
        runs.setdefault(f"sweep-{kind}", {})[f"{w}/{seed}"] = opened.directory(stage)
    curves = {f"{w}/{who}": opened.directory(c) for (w, who), c in graph.curves.items()}
    atomic_write_json(run_dir / "stages.json", {"store": str(opened.root), "stages": stage_table(stages, opened)})
    return write_concept_report(run_dir, report_meta(config, gate), runs,
                                data={f"{w}/{s}": opened.directory(d) for (w, s), d in graph.data.items()},
                                curves=curves, figures=figures, log=log)


class GateFailed(ExperimentError):
    """The strong model did not reach the pre-training gate's tolerance in ``gate.max_chunks``."""
