"""``gold``: the ceiling, the student fine-tuned on the gold answers of the training split."""

from __future__ import annotations

from w2s_jax.methods.base import Method, label_row, register


@register
class Gold(Method):
    """The ceiling: fine-tune on gold answers (needs them in the training split)."""

    name = "gold"
    uses_weak = False
    needs_gold = True

    def label(self, ctx, units):
        rows = []
        for unit in units:
            for p in unit:
                example = ctx.examples[p]
                if example.answer is None:
                    raise ValueError(f"gold: training row {example.index} has no gold answer")
                rows.append(label_row(example, ctx.task.target(example, example.answer)))
        return rows
