"""``context-distill``: the student fits the strong model's in-context predictive, not sampled text.

``icl-refine`` trains the student on one text drawn from the strong model's posterior predictive
given the weak demonstrations. This method keeps the predictive itself: for each training example
the strong model reads the same in-context prompt as in ``icl-refine`` (same demonstrations, in the
same order), followed by ``icl-refine``'s label for the example, and at every completion token
its top ``top_k`` next-token probabilities, renormalised over the k, are the target. The student,
which reads the question without demonstrations, is fitted to them with
:class:`~w2s_jax.train.KLToTeacher` (its full-vocabulary distribution against the teacher's top-k),
which is refinement with the categorical objective of ``docs/theory.md`` token by token.

Label rows: ``{"index", "completion", "teacher_ids": n x k ints, "teacher_probs": n x k floats}``,
n the number of tokens of the completion as :class:`~w2s_jax.train.SFTDataset` tokenizes it; the
ids are the strong model's vocabulary, so the student must share its tokenizer. An example whose
``icl-refine`` label is empty has no completion token to fit and gets no row.

The demonstrations are read from ``icl-refine``'s label records (each lists the example indices
that demonstrated its prompt), so icl-refine's ``batch``, ``shuffle_seed`` and ``fixed_demos`` are
said once, in ``[methods.icl-refine]``, and this method's prompts are exactly the ones icl-refine
answered, in icl-refine's prompt layout (``upstream_options``).
"""

from __future__ import annotations

import dataclasses

from w2s_jax.methods.base import Method, label_row, register
from w2s_jax.methods.icl_refine import question_text
from w2s_jax.tasks.demonstrations import in_context_prompt


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContextDistillOptions:
    # Tokens kept per position (2 x top_k numbers stored per completion token). The mass the k
    # had before renormalising is TopKResult.kept_mass: raise top_k where it is far below 1.
    top_k: int = 16

    def __post_init__(self):
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1:
            raise ValueError(f"methods.context-distill.top_k must be an int >= 1, got {self.top_k!r}")


@register
class ContextDistill(Method):
    """The student fits the strong model's top-k predictive given the weak demonstrations."""

    name = "context-distill"
    Options = ContextDistillOptions
    needs = ("icl-refine",)
    roles = ("strong",)

    def record(self, ctx, position: int) -> dict:
        """icl-refine's label record of the example at ``position``."""
        index = ctx.examples[position].index
        rows = ctx.upstream.get("icl-refine")
        if rows is None or index not in rows:
            raise ValueError(f"context-distill: no icl-refine label for training example {index}; "
                             "icl-refine must run first")
        if "demos" not in rows[index]:
            raise ValueError(f"context-distill: icl-refine's label of example {index} does not list its "
                             "demonstrations (labels from an older version): rerun icl-refine")
        return rows[index]

    def units(self, ctx):
        labelled = ctx.upstream.get("icl-refine", {})
        return [(p,) for p, e in enumerate(ctx.examples) if e.index in labelled]

    def label(self, ctx, units):
        engine = ctx.engine("strong")
        position = {e.index: p for p, e in enumerate(ctx.examples)}
        records = {p: self.record(ctx, p) for unit in units for p in unit}
        # an empty label has no token to fit (it would add no term to the loss)
        queries = [p for p, r in records.items()
                   if engine.tokenizer.encode(r["completion"], add_special_tokens=False)]
        layout = ctx.upstream_options["icl-refine"].layout()
        prompts = [in_context_prompt([(question_text(ctx, position[d]), ctx.weak[position[d]])
                                      for d in records[p]["demos"]], question_text(ctx, p), layout)
                   for p in queries]
        targets = engine.next_token_topk(prompts, [records[p]["completion"] for p in queries], self.options.top_k)
        return [label_row(ctx.examples[p], records[p]["completion"], teacher_ids=target.topk_ids.tolist(),
                          teacher_probs=target.topk_probs.tolist())
                for p, target in zip(queries, targets)]
