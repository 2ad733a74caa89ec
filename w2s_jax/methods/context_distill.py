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

The options ``batch``, ``shuffle_seed`` and ``fixed_demos`` choose the demonstrations and must equal
``icl-refine``'s for the completion to be the answer to this very prompt; keep them the same.
"""

from __future__ import annotations

import dataclasses

from w2s_jax.methods.base import Method, label_row, register
from w2s_jax.methods.icl_refine import ICLRefine, ICLRefineOptions, question_text
from w2s_jax.tasks.demonstrations import in_context_prompt


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContextDistillOptions:
    batch: int = 5  # as icl-refine's: questions per batch
    shuffle_seed: int | None = None  # as icl-refine's
    fixed_demos: int = 0  # as icl-refine's
    # Tokens kept per position (2 x top_k numbers stored per completion token). The mass the k
    # had before renormalising is TopKResult.kept_mass: raise top_k where it is far below 1.
    top_k: int = 16

    def __post_init__(self):
        name = "methods.context-distill"
        if not isinstance(self.batch, int) or self.batch < 2:
            raise ValueError(f"{name}.batch must be an int >= 2, got {self.batch!r}")
        if not isinstance(self.fixed_demos, int) or self.fixed_demos < 0:
            raise ValueError(f"{name}.fixed_demos must be an int >= 0, got {self.fixed_demos!r}")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"{name}.top_k must be an int >= 1, got {self.top_k!r}")

    def demonstrations(self) -> ICLRefineOptions:
        """The icl-refine options that choose the same demonstrations."""
        return ICLRefineOptions(batch=self.batch, shuffle_seed=self.shuffle_seed,
                                fixed_demos=self.fixed_demos)


@register
class ContextDistill(Method):
    """The student fits the strong model's top-k predictive given the weak demonstrations."""

    name = "context-distill"
    Options = ContextDistillOptions
    needs = ("icl-refine",)
    roles = ("strong",)

    def __init__(self, options=None):
        super().__init__(options)
        self._icl = ICLRefine(self.options.demonstrations())

    def check(self, methods):
        icl = methods["icl-refine"].options
        mine = self.options.demonstrations()
        for field in ("batch", "shuffle_seed", "fixed_demos"):
            if getattr(icl, field) != getattr(mine, field):
                raise ValueError(
                    f"methods.context-distill.{field} = {getattr(mine, field)!r} differs from "
                    f"methods.icl-refine.{field} = {getattr(icl, field)!r}: the teacher's predictive "
                    "must be read on the prompts icl-refine answered; set both the same")

    def units(self, ctx):
        return self._icl.units(ctx)

    def completion(self, ctx, position: int) -> str:
        """icl-refine's label of the example at ``position``."""
        index = ctx.examples[position].index
        rows = ctx.upstream.get("icl-refine")
        if rows is None or index not in rows:
            raise ValueError(f"context-distill: no icl-refine label for training example {index}; "
                             "icl-refine must run first with the same batch, shuffle_seed and fixed_demos")
        return rows[index]["completion"]

    def label(self, ctx, units):
        engine = ctx.engine("strong")
        demos = {p: self._icl.demos_of(unit)(p) for unit in units for p in unit}
        completions = {p: self.completion(ctx, p) for p in demos}
        # an empty label has no token to fit (it would add no term to the loss)
        queries = [p for p in demos if engine.tokenizer.encode(completions[p], add_special_tokens=False)]
        prompts = [in_context_prompt([(question_text(ctx, d), ctx.weak[d]) for d in demos[p]],
                                     question_text(ctx, p)) for p in queries]
        targets = engine.next_token_topk(prompts, [completions[p] for p in queries], self.options.top_k)
        return [label_row(ctx.examples[p], completions[p], teacher_ids=target.topk_ids.tolist(),
                          teacher_probs=target.topk_probs.tolist())
                for p, target in zip(queries, targets)]
