"""``icl-refine``: the strong model relabels each question in context (Algorithm 1).

The training questions are cut into batches of ``batch`` (optionally after a seeded shuffle). For
each query, the other questions of its batch with their weak answers are the demonstrations, in
batch order, and the strong model answers the query after them; the query itself is never among
its demonstrations. Its answer is the query's training label. This is refinement in the sense of
``docs/theory.md``: the demonstrations sharpen the strong model's posterior over latent concepts
on the one the weak labels point to, and the answer is read from that posterior.

With ``draw = "fresh"`` each query draws its own ``batch - 1`` demonstrations instead, uniformly
without replacement from the other training questions (never itself), from
``fold_in(fold_in(key, DEMO_STREAM), example index)``: the theory's assumption A4 (fresh
demonstrations per label), under which the labels err independently rather than a batch at a time
(a split of fewer than ``batch`` questions gives each query all the others, as one batch would).
The draw depends on the stage's key and the row only, never on chunking or batch sizes; a unit is
then one question. The default ``draw = "batch"`` is Algorithm 1's batches (and keeps the stage
keys of every experiment that does not set it).

With ``fixed_demos = n > 0`` every query gets the same n demonstrations instead: the weak answers
to the first n training questions, which are then not trained on (the paper's math setting). A
list of positions (``fixed_demos = [0, 2]``) names the demonstrations instead; the questions up to
the last of them are not trained on (the paper's MATH notebook: demonstrations 0 and 2, training
from 3).

The prompt layout is configuration (:class:`~w2s_jax.tasks.demonstrations.Layout`): by default the
demonstrations are the system message and ``Question: {q}\\nAnswer:`` the user turn; the options
``placement``, ``demo``, ``separator``, ``query``, ``query_separator``, ``demo_system``,
``strip_newlines`` and ``cut`` set another (``experiments/paper/`` sets the paper's).
"""

from __future__ import annotations

import dataclasses

from w2s_jax.methods.base import Method, label_row, register
from w2s_jax.added_fields import added_field
from w2s_jax.tasks.demonstrations import (
    DRAWS,
    QUERY_STOP,
    Layout,
    batches,
    clean_answer,
    fresh_demos,
    layout_options,
)

_LAYOUT = Layout()
DEMO_STREAM = 0x64656D6F  # the fresh draws' stream, fold_in(key, DEMO_STREAM): never an answer's key


@dataclasses.dataclass(frozen=True, kw_only=True)
class ICLRefineOptions:
    batch: int = 5  # questions per batch; each query sees the other batch - 1 as demonstrations
    shuffle_seed: int | None = None  # shuffle the questions before batching (None: file order)
    fixed_demos: int | tuple[int, ...] = 0  # n > 0: the first n questions' weak answers demonstrate every query; a list: those positions
    # the prompt layout (w2s_jax.tasks.demonstrations.Layout)
    placement: str = _LAYOUT.placement  # "system": demonstrations as system message; "user": before the query
    demo: str = _LAYOUT.demo  # one demonstration, {question} and {answer}
    separator: str = _LAYOUT.separator  # between demonstrations
    query: str = _LAYOUT.query  # the query, {question}
    query_separator: str = _LAYOUT.query_separator  # between demonstrations and query ("user" placement)
    demo_system: str | None = _LAYOUT.system  # the system message with "user" placement
    strip_newlines: bool = _LAYOUT.strip_newlines  # remove "\n" from questions and answers shown
    cut: int = _LAYOUT.cut  # characters cut from the end of the joined demonstrations
    draw: str = added_field("batch")  # "batch": the other questions of the query's batch; "fresh": batch - 1 of its own

    def __post_init__(self):
        if not isinstance(self.batch, int) or self.batch < 2:
            raise ValueError(f"methods.icl-refine.batch must be an int >= 2, got {self.batch!r}")
        if self.draw not in DRAWS:
            raise ValueError(f"methods.icl-refine.draw must be one of {list(DRAWS)}, got {self.draw!r}")
        if self.draw == "fresh" and (self.fixed_demos or self.shuffle_seed is not None):
            raise ValueError("methods.icl-refine.draw = \"fresh\" draws each query's demonstrations itself: "
                             "it takes no fixed_demos or shuffle_seed")
        fixed = self.fixed_demos
        if isinstance(fixed, list):
            object.__setattr__(self, "fixed_demos", fixed := tuple(fixed))
        valid = (isinstance(fixed, int) and not isinstance(fixed, bool) and fixed >= 0) or (
            isinstance(fixed, tuple) and fixed and len(set(fixed)) == len(fixed)
            and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in fixed))
        if not valid:
            raise ValueError(f"methods.icl-refine.fixed_demos must be an int >= 0 or a list of distinct "
                             f"positions >= 0, got {self.fixed_demos!r}")
        self.layout()

    def demo_positions(self) -> tuple[int, ...]:
        """The fixed demonstrations' positions, in order (empty: batches)."""
        fixed = self.fixed_demos
        return tuple(range(fixed)) if isinstance(fixed, int) else fixed

    def layout(self) -> Layout:
        """The prompt layout these options describe."""
        return layout_options(self, "methods.icl-refine")


def question_text(ctx, position: int) -> str:
    """The question as the strong model reads it (the task's student prompt text)."""
    return ctx.task.question_text(ctx.examples[position])


def refine(ctx, role: str, queries: list[int], demos_of, answers, layout: Layout = _LAYOUT) -> list[str]:
    """The ``role`` model's in-context answers to ``queries`` (positions); ``demos_of(p)`` lists
    the demonstration positions of query p and ``answers[p]`` their labels."""
    prompts = [layout.prompt([(question_text(ctx, d), answers[d]) for d in demos_of(p)],
                             question_text(ctx, p)) for p in queries]
    generation = ctx.generation
    if QUERY_STOP not in generation.stop:
        generation = dataclasses.replace(generation, stop=generation.stop + (QUERY_STOP,))
    examples = [ctx.examples[p] for p in queries]
    texts = ctx.task.answer(ctx.engine(role), prompts, examples, generation, key=ctx.key)
    return [clean_answer(text) for text in texts]


@register
class ICLRefine(Method):
    """Algorithm 1: the strong model answers each question after its batch's weak pairs."""

    name = "icl-refine"
    Options = ICLRefineOptions
    roles = ("strong",)

    def units(self, ctx):
        fixed = self.options.demo_positions()
        if fixed:
            first = max(fixed) + 1
            if first >= len(ctx.examples):
                raise ValueError(f"icl-refine: fixed_demos={self.options.fixed_demos} leaves no training "
                                 f"question (the split has {len(ctx.examples)})")
            return [(p,) for p in range(first, len(ctx.examples))]
        if self.options.draw == "fresh":
            if len(ctx.examples) < 2:
                raise ValueError("icl-refine: draw = \"fresh\" needs at least 2 training questions "
                                 f"(a query needs another as demonstration; the split has {len(ctx.examples)})")
            return [(p,) for p in range(len(ctx.examples))]
        return batches(len(ctx.examples), self.options.batch, seed=self.options.shuffle_seed)

    def demos(self, ctx, unit: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
        """Demonstration positions of each query of ``unit``."""
        fixed = self.options.demo_positions()
        if fixed:
            return {p: fixed for p in unit}
        if self.options.draw == "fresh":
            if ctx.key is None:
                raise ValueError("icl-refine: draw = \"fresh\" needs the stage's PRNG key (MethodContext.key)")
            import jax

            stream = ctx.folded(DEMO_STREAM).key
            n = min(self.options.batch, len(ctx.examples)) - 1  # a split shorter than a batch: all the others, as batches do
            return {p: fresh_demos(jax.random.fold_in(stream, ctx.examples[p].index), len(ctx.examples), p, n)
                    for p in unit}
        return {p: tuple(d for d in unit if d != p) for p in unit}

    def label(self, ctx, units):
        demos = {p: d for unit in units for p, d in self.demos(ctx, unit).items()}
        queries = list(demos)  # every query of the chunk in one engine call (length-sorted batches)
        answers = refine(ctx, "strong", queries, demos.__getitem__, ctx.weak, self.options.layout())
        # the demonstrations (by example index) are part of the record: a method that builds on
        # these labels (context-distill) rebuilds the very prompt each one answered
        return [label_row(ctx.examples[p], ctx.task.target(ctx.examples[p], a),
                          demos=[ctx.examples[d].index for d in demos[p]])
                for p, a in zip(queries, answers)]
