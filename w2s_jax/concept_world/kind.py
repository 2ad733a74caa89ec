"""``kind = "concept-world"``: the concept world as an experiment kind of ``w2s run``."""

from __future__ import annotations

from pathlib import Path

from w2s_jax.pipeline.kind import ExperimentKind, register_kind


@register_kind
class ConceptWorldKind(ExperimentKind):
    """The concept world: pre-training, the pipeline per seed, sweeps (docs/results.md)."""

    name = "concept-world"
    has_quick = True

    def load(self, path, *, overrides=(), methods=None, quick=False):
        from w2s_jax.concept_world.config import load_concept_world

        return load_concept_world(path, overrides=overrides, quick=quick)

    def graph(self, config, store):
        from w2s_jax.concept_world.experiment import concept_graph

        return concept_graph(config, store).stages()

    def run(self, config, *, run_dir=None, store=None, show_progress=True, figures=True, dry_run=False,
            methods=None):
        from w2s_jax.concept_world.experiment import run_concept_world

        return run_concept_world(config, out=run_dir, store=store, methods=methods,
                                 show_progress=show_progress, figures=figures, dry_run=dry_run)

    def owns(self, run_dir: Path) -> bool:
        from w2s_jax.concept_world.report import INDEX

        return (run_dir / INDEX).is_file()

    def report(self, run_dir, *, figures=True):
        from w2s_jax.concept_world.report import rebuild_concept_report, results_markdown

        return results_markdown(rebuild_concept_report(run_dir, figures=figures, log=lambda text: None))
