"""``bootstrap``: weak -> intermediate model(s) -> strong, refining in context at every hop.

The experiment's ``models.intermediate`` lists a chain of models between the weak and the strong
one. Hop 1: the first intermediate model (``"intermediate:0"``) relabels the training questions
exactly as ``icl-refine`` does, with the weak answers as demonstrations. Hop i + 1: the next model
relabels them with hop i's labels as demonstrations. The last hop is the strong model, and its
labels are the training labels. Each model only has to read labels from a model a step weaker
than itself, a smaller gap than weak-to-strong in one step.

Batching is ``icl-refine``'s (``batch``, ``shuffle_seed``) and a unit is one batch with all of its
hops, so a killed run never leaves half a chain. Bootstrap has no ``draw = "fresh"``: a fresh draw
for a hop-h label would read hop h - 1's labels of the whole training set, so a unit would be the
whole split (one unit, nothing to resume) and each hop a barrier; it keeps the paper's batches. With no intermediate model bootstrap would be
``icl-refine`` itself, so it refuses: run ``icl-refine`` instead. Each label row keeps the
intermediate hops' labels under ``"hops"`` for inspection. A sampled label of hop h draws from
``fold_in(fold_in(key, h), example index)``: hops never share a draw.
"""

from __future__ import annotations

import dataclasses

from w2s_jax.methods.base import Method, label_row, register
from w2s_jax.methods.icl_refine import refine
from w2s_jax.tasks.demonstrations import batches


@dataclasses.dataclass(frozen=True, kw_only=True)
class BootstrapOptions:
    batch: int = 5  # questions per batch; each query sees the other batch - 1 as demonstrations
    shuffle_seed: int | None = None  # shuffle the questions before batching (None: file order)

    def __post_init__(self):
        if not isinstance(self.batch, int) or self.batch < 2:
            raise ValueError(f"methods.bootstrap.batch must be an int >= 2, got {self.batch!r}")


def hop_roles(num_intermediate: int) -> list[str]:
    """The models of the chain in order: every intermediate one, then the strong one."""
    return [f"intermediate:{i}" for i in range(num_intermediate)] + ["strong"]


@register
class Bootstrap(Method):
    """Weak -> intermediate -> strong: each model refines the previous one's labels in context."""

    name = "bootstrap"
    draws = 2  # 2: each hop / the description draws from its own per-row stream
    Options = BootstrapOptions
    roles = ("intermediate", "strong")

    def units(self, ctx):
        if ctx.num_intermediate < 1:
            raise ValueError("bootstrap needs at least one intermediate model (models.intermediate in "
                             "the experiment file); with none it would be icl-refine: use icl-refine")
        return batches(len(ctx.examples), self.options.batch, seed=self.options.shuffle_seed)

    def label(self, ctx, units):
        demos = {p: tuple(d for d in unit if d != p) for unit in units for p in unit}
        queries = list(demos)  # every query of the chunk in one call per hop
        labels = {p: ctx.weak[p] for p in queries}
        hops = []
        for hop, role in enumerate(hop_roles(ctx.num_intermediate)):  # each hop samples with its own key
            labels = dict(zip(queries, refine(ctx.folded(hop), role, queries, demos.__getitem__, labels)))
            hops.append(labels)
        return [label_row(ctx.examples[p], ctx.task.target(ctx.examples[p], labels[p]),
                          hops=[hop[p] for hop in hops[:-1]])
                for p in queries]
