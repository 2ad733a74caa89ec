"""``w2s run`` for ``kind = "concept-world"``: one graph of stages in the shared store, then the report.

1. Per world, one decoder is pre-trained in chunks until the gate passes (:mod:`.gate`). That one
   trajectory gives all three models, so nothing is pre-trained twice: the last chunk is the strong
   model, the first earlier chunk within ``gate.intermediate_tolerance`` of Bayes-optimal is the
   intermediate model (bootstrap's middle hop, which can learn in context), and the chunk before
   that is the weak model's base (:func:`.gate.trajectory_chunks`).
2. Setup stages (:mod:`.stages`): per (world, seed), the data and label files and the weak model
   (its base fine-tuned on the seed's gold pool, disjoint from every question it labels).
3. Per (world, seed), the standard pipeline's stages (``w2s_jax.pipeline.build_plan``) of the
   experiments built with ``experiment_from_dict`` that point at those artifacts: ``main`` (the
   experiment's methods against the weak model and the controlled labellers of ``[supervisors]``),
   ``quality`` (``sweeps.quality_methods`` against noisy labellers of every ``sweeps.quality``
   level) and ``size-m`` (the same against one noisy labeller on the first m training questions).
   All are planned in the same graph, so a stage they share (``gold``'s labels and student,
   ``zero-shot``) has one key and is computed once per seed.
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
from w2s_jax.concept_world.gate import trajectory_chunks, verdict
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


def world_model(config: ConceptWorldConfig, w: int) -> tuple[WorldConfig, PretrainConfig]:
    """World ``w``'s settings and its decoder's (pre-training seed offset by ``w``)."""
    return (dataclasses.replace(config.world, seed=w),
            dataclasses.replace(config.strong, seed=config.strong.seed + w))


def strong_chunk(config: ConceptWorldConfig, w: int, chunk: int) -> Pretrain:
    """The ``chunk``-th (1-based) pre-training chunk of world ``w``'s decoder."""
    world, model = world_model(config, w)
    stage = None
    for c in range(1, chunk + 1):
        stage = Pretrain(name=f"pretrain/strong/world-{w}" + (f"/chunk-{c}" if c > 1 else ""), world=world,
                         model=model, stream=0, previous=stage)
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
    curves: dict  # (world, "strong" | "intermediate" | "weak") -> Curve of that model's chunk

    def stages(self) -> list:
        ordered = [*self.setup, *self.curves.values()]
        for _config, stages, _plan, _subjects in self.parts.values():
            ordered += stages
        ordered += list(self.sweeps.values())
        return graph_order(ordered)


def concept_graph(config: ConceptWorldConfig, store: Store, methods: Sequence[str] | None = None,
                  chunks_of: dict | None = None) -> ConceptGraph:
    """The whole experiment as one graph of stages (nothing runs; keys are known up front).
    ``chunks_of``: each world's :func:`.gate.trajectory_chunks` (default: chunk 1 for all three,
    as before the gate has run)."""
    main_methods = list(methods or config.pipeline.get("methods", {}).get("run", DEFAULT_METHODS))
    generation = None
    setup_stages, parts, sweeps, data, curves = [], {}, {}, {}, {}
    for w in config.worlds:
        world_config, _model = world_model(config, w)
        chunks = (chunks_of or {}).get(w) or {"strong": 1, "intermediate": 1, "weak": 1}
        strong, middle, weak_base = (strong_chunk(config, w, chunks[who]) for who in ("strong", "intermediate", "weak"))
        setup_stages += [strong, middle, weak_base]
        for who, stage in (("strong", strong), ("intermediate", middle), ("weak", weak_base)):
            curves[(w, who)] = gate_curve(config, stage, f"strong/world-{w}/chunk-{stage.chunk}")
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


def labels_fit_paths(store: Store, subjects) -> dict[str, str]:
    """Where each method student's training labels are (``{"index", "completion"}`` rows)."""
    out = {}
    for subject in subjects:
        finetune = getattr(subject.score_stage.predict.answerer, "finetune", None)
        if subject.role == "method" and finetune is not None:
            out[subject.name] = str(store.directory(finetune.labels) / RECORDS)
    return out


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
    gate, strong_of, chunks_of = {}, {}, {}
    for w in config.worlds:
        strong_of[w], gate[w] = pass_gate(config, w, res, log=log, executed=executed)
        chunks_of[w] = trajectory_chunks(gate[w], config.gate.intermediate_tolerance)
        if not gate[w][-1]["passed"]:
            message = (f"world {w}: the strong model missed the pre-training gate after {len(gate[w])} chunk(s) "
                       f"({strong_of[w].total_steps} steps): in-context accuracy {gate[w][-1]['gap']:.3f} below "
                       f"Bayes-optimal at n = {gate[w][-1]['worst_n']} (tolerance {config.gate.tolerance})")
            if config.gate.enforce:
                atomic_write_json(run_dir / "gate.json", {"passed": False, "worlds": {str(k): v for k, v in gate.items()}})
                raise GateFailed(message + "; stopping (gate.json)")
            log(message + "; running on as a smoke test (gate.enforce = false)")
        c = chunks_of[w]
        log(f"world {w}: strong model = chunk {c['strong']}, intermediate = chunk {c['intermediate']} "
            f"({'within' if c['intermediate_passed'] else 'NOT within'} gate.intermediate_tolerance = "
            f"{config.gate.intermediate_tolerance}), weak model's base = chunk {c['weak']}")
    atomic_write_json(run_dir / "gate.json", {"passed": all(records[-1]["passed"] for records in gate.values()),
                                              "worlds": {str(k): v for k, v in gate.items()},
                                              "chunks": {str(k): v for k, v in chunks_of.items()}})
    graph = concept_graph(config, opened, methods, chunks_of)
    stages = graph.stages()
    run_stages(stages, res, log=log, executed=executed)
    runs: dict = {}
    for (w, seed, part), (experiment, _stages, plan, subjects) in graph.parts.items():
        directory = run_dir / f"world-{w}" / f"seed-{seed}" / part
        plan = {**plan, "predictions": {s.name: predictions_path(opened, s) for s in subjects},
                "labels_fit": labels_fit_paths(opened, subjects)}
        atomic_write_json(directory / PLAN, plan)
        write_report(directory, figures=figures)
        runs.setdefault(part, {})[f"{w}/{seed}"] = directory
    for (w, seed, kind), stage in graph.sweeps.items():
        runs.setdefault(f"sweep-{kind}", {})[f"{w}/{seed}"] = opened.directory(stage)
    curves = {f"{w}/{who}": opened.directory(c) for (w, who), c in graph.curves.items()}
    atomic_write_json(run_dir / "stages.json", {"store": str(opened.root), "stages": stage_table(stages, opened)})
    return write_concept_report(run_dir, report_meta(config, gate, chunks_of), runs,
                                data={f"{w}/{s}": opened.directory(d) for (w, s), d in graph.data.items()},
                                curves=curves, figures=figures, log=log)


class GateFailed(ExperimentError):
    """The strong model did not reach the pre-training gate's tolerance in ``gate.max_chunks``."""
