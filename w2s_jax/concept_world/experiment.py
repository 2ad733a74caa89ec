"""``w2s run`` for ``kind = "concept-world"``: setup stages, the pipeline per seed, sweeps, report.

1. Setup stages (:mod:`.stages`): pre-train the strong and the weak decoder; per seed, the data and
   label files and the weak model fine-tuned on a few gold examples.
2. Per seed, the standard pipeline (``w2s_jax.pipeline.runner.run_experiment``) twice, on an
   ``ExperimentConfig`` built with ``experiment_from_dict`` that points at those artifacts:
   ``seed-s/main`` (the experiment's methods against the weak model and the controlled labellers
   of ``[supervisors]``; the weak decoder before fine-tuning is ``models.intermediate``, the middle
   hop of ``bootstrap``) and ``seed-s/quality`` (``sweeps.quality_methods`` against noisy labellers
   of every ``sweeps.quality`` level: the quality sweep).
3. Per seed, the demonstrations and gamma sweeps (stages, cached like the rest).
4. The report over seeds (:mod:`.report`): ``results.json``, ``results.md``, ``figures/``, and
   ``concept_world.json``, from which ``w2s report RUN_DIR`` rebuilds them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from w2s_jax.concept_world.config import ConceptWorldConfig, load_concept_world
from w2s_jax.concept_world.stages import (
    Pretrain,
    SeedData,
    SetupRun,
    Sweep,
    WeakFinetune,
    main_labellers,
    quality_labellers,
)
from w2s_jax.pipeline.stage import run_stages

# methods.run of the main run when the file does not say: every method that fits this task
DEFAULT_METHODS = ("zero-shot", "naive", "icl-refine", "context-distill", "bootstrap", "gold")


def pipeline_dict(config: ConceptWorldConfig, *, name: str, seed: int, data: SeedData, run: SetupRun,
                  strong: Pretrain, weak_base: Pretrain, weak_models: Sequence[str],
                  label_files: Sequence[str], methods: Sequence[str]) -> dict:
    """The standard experiment (as a parsed TOML document) of one pipeline run of one seed."""
    p = config.pipeline
    method_tables = {k: v for k, v in dict(p.get("methods", {})).items() if k != "run"}
    raw = {"name": name, "seed": seed, "task": {"name": "concept"},
           "data": {"train": str(data.path(run, "train.jsonl")), "test": str(data.path(run, "test.jsonl"))},
           "models": {"batch_size": 64, "length_bucket": 16, **dict(p.get("models", {})),
                      "strong": str(strong.model_dir(run)), "weak": list(weak_models),
                      "weak_label_files": list(label_files),
                      "intermediate": [str(weak_base.model_dir(run))]},
           "methods": {**method_tables, "run": list(methods)},
           "generation": {"max_new_tokens": 2, **dict(p.get("generation", {}))}}
    for key in ("train", "report", "chunk_size"):
        if key in p:
            raw[key] = p[key]
    return raw


def run_concept_world(path: str | Path, *, out: str | Path | None = None, overrides: Sequence[str] = (),
                      quick: bool = False, methods: Sequence[str] | None = None, show_progress: bool = True,
                      figures: bool = True, log: Callable[[str], None] = print) -> dict:
    """Runs (or resumes) a concept-world experiment; returns the aggregate results.

    Arguments:
      path: the experiment file (``kind = "concept-world"``).
      out: the run directory (default ``runs/<name>``).
      overrides: ``--set`` items; ``quick``: the ``--quick`` preset first.
      methods: replaces the main run's ``methods.run``.
    """
    from w2s_jax.concept_world.report import report_meta, write_concept_report
    from w2s_jax.pipeline.config import experiment_from_dict
    from w2s_jax.pipeline.runner import run_experiment

    config = load_concept_world(path, overrides=overrides, quick=quick)
    run_dir = Path(out) if out is not None else Path("runs") / config.name
    run = SetupRun(config, run_dir, show_progress=show_progress)
    strong, weak_base = Pretrain("strong"), Pretrain("weak")
    data = {s: SeedData(s) for s in config.seeds}
    weak = {s: WeakFinetune(s, weak_base, data[s]) for s in config.seeds}
    main_methods = list(methods or config.pipeline.get("methods", {}).get("run", DEFAULT_METHODS))

    def experiments(seed: int) -> dict:
        """The seed's pipeline experiments by part (paths point into stage directories)."""
        setup = data[seed].setup(run)

        def files(labellers):
            return [str(data[seed].path(run, f"labellers/{labeller.name}.jsonl")) for labeller in labellers]

        plans = {"main": (main_methods, [str(weak[seed].model_dir(run))] if config.supervisors.weak_model else [],
                          files(main_labellers(config, setup)))}
        if config.sweeps.quality:
            plans["quality"] = (list(config.sweeps.quality_methods), [], files(quality_labellers(config)))
        return {part: experiment_from_dict(
                    pipeline_dict(config, name=f"{config.name}-{part}-seed{seed}", seed=seed, data=data[seed],
                                  run=run, strong=strong, weak_base=weak_base, weak_models=weak_models,
                                  label_files=label_files, methods=names), source=config.source)
                for part, (names, weak_models, label_files) in plans.items()}

    experiments(config.seeds[0])  # the pipeline tables are checked before any pre-training
    log(f"w2s run {config.name} (concept world): seeds {list(config.seeds)} -> {run_dir}")
    run_stages([strong, weak_base, *(x for s in config.seeds for x in (data[s], weak[s]))], run, log=log)
    runs = {}
    for seed in config.seeds:
        for part, experiment in experiments(seed).items():
            directory = run_dir / f"seed-{seed}" / part
            log(f"--- seed {seed}: {part} ---")
            run_experiment(experiment, run_dir=directory, show_progress=show_progress, figures=figures, log=log)
            runs.setdefault(part, {})[seed] = directory
        sweeps = [Sweep(kind, seed, strong, data[seed]) for kind, on in
                  (("demos", config.sweeps.demos), ("gamma", config.sweeps.gamma)) if on]
        run_stages(sweeps, run, log=log)
        for stage in sweeps:
            runs.setdefault(f"sweep-{stage.kind}", {})[seed] = stage.directory(run)
    return write_concept_report(run_dir, report_meta(config), runs, data={s: data[s].directory(run) for s in config.seeds},
                                figures=figures, log=log)
