"""``naive``: fine-tune the student on the weak labels as they are."""

from __future__ import annotations

from w2s_jax.methods.base import Method, label_row, register


@register
class Naive(Method):
    """Naive fine-tuning: the weak supervisor's answers are the training labels."""

    name = "naive"

    def label(self, ctx, units):
        return [label_row(ctx.examples[p], ctx.task.target(ctx.examples[p], ctx.weak[p]))
                for unit in units for p in unit]
