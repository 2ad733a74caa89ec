"""``kind = "classification"``: binary classification weak-to-strong as an experiment kind of
``w2s run`` (docs/classification.md)."""

from __future__ import annotations

from pathlib import Path

from w2s_jax.pipeline.kind import ExperimentKind, register_kind


@register_kind
class ClassificationKind(ExperimentKind):
    """Binary classification (Burns et al. 2023): weak models on half A, students on their soft
    labels of half B, probes, in-context refinement, PGR on accuracy and AUC over seeds."""

    name = "classification"

    def load(self, path, *, overrides=(), methods=None, quick=False):
        from w2s_jax.classify.config import load_classification
        from w2s_jax.pipeline.config import ExperimentError

        if quick:
            raise ExperimentError(f"{path}: --quick is not offered by classification experiments; "
                                  "use --set task.n_train=... to shrink one")
        if methods is not None:
            raise ExperimentError(f"{path}: --methods is for standard experiments; a classification "
                                  "experiment picks its students with --set 'losses.run=[...]'")
        return load_classification(path, overrides=overrides)

    def preflight(self, config, run_dir):
        from w2s_jax.classify.run import preflight

        preflight(config)

    def graph(self, config, store):
        from w2s_jax.classify.graph import classification_graph

        return classification_graph(config, store).stages

    def run(self, config, *, run_dir=None, store=None, show_progress=True, figures=True, dry_run=False,
            methods=None):
        from w2s_jax.classify.run import run_classification

        return run_classification(config, run_dir=run_dir, store=store, show_progress=show_progress,
                                  figures=figures, dry_run=dry_run)

    def owns(self, run_dir: Path) -> bool:
        from w2s_jax.classify.run import INDEX

        return (Path(run_dir) / INDEX).is_file()

    def report(self, run_dir, *, figures=True):
        from w2s_jax.classify.report import results_markdown, write_report

        return results_markdown(write_report(run_dir, figures=figures))
