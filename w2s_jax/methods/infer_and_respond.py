"""``infer-and-respond``: the strong model states what the weak answers do, then answers so (Algorithm 2).

The training questions are cut into batches of ``batch`` exactly as for ``icl-refine``. For each
batch the strong model reads all of its (question, weak answer) pairs, in the demonstration format
of :mod:`~w2s_jax.tasks.demonstrations`, and completes one sentence that begins with a fixed
``prefix`` ("The answers are written in the style of"): its continuation is cut at the first
sentence end or line break, and prefix + continuation is the inferred behaviour. Then it answers
each question of the batch alone, told by the system message to follow that sentence; the answer
is the question's training label. Where ``icl-refine`` shows the behaviour by example, this method
makes the strong model name it first, so a behaviour that the examples share but no single answer
pins down (a style, a persona, a technique) is carried to every answer.

With ``detector`` set, the first step is instead the paper's layout: ``detector`` is the system
message (e.g. "You are an AI style detector ... summarize it in one sentence that begins with
\"The used style is:\""), the batch's pairs are the user turn, and the whole reply, stripped, is
the behaviour. ``respond`` is the answering system message and ``respond_user`` the user turn
(``{question}``); ``demo``, ``separator``, ``cut`` and ``strip_newlines`` lay out the pairs as
in :class:`~w2s_jax.tasks.demonstrations.Layout` (``strip_newlines`` also applies to the question of
the answering step).

Each label row keeps the sentence under ``"inferred"`` for inspection. A sampled sentence draws
from ``fold_in(fold_in(key, DESCRIBE), index of the batch's first example)``, a sampled answer from
``fold_in(key, example index)``.
"""

from __future__ import annotations

import dataclasses
import re

from w2s_jax.inference.engine import Prompt
from w2s_jax.methods.base import Method, label_row, register
from w2s_jax.methods.icl_refine import question_text
from w2s_jax.tasks.demonstrations import Layout, batches, check_text

PREFIXES = {
    "style": "The answers are written in the style of",  # style and persona tasks
    "technique": "The answers explain using the technique of",  # explanation tasks
}
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
DESCRIBE = 1  # the key stream of the inferred sentences (MethodContext.folded); answers use the stage key


@dataclasses.dataclass(frozen=True, kw_only=True)
class InferAndRespondOptions:
    batch: int = 5  # questions per batch; the behaviour is inferred from all of them
    shuffle_seed: int | None = None  # shuffle the questions before batching (None: file order)
    kind: str = "style"  # which default prefix: "style" (style, persona) or "technique" (explanations)
    prefix: str | None = None  # the sentence's fixed beginning; overrides kind's default
    describe: str = "Complete the sentence that describes what the answers above have in common."
    respond: str = "{behaviour} Answer the question in that way."  # the answering system message
    respond_user: str = "{question}"  # the answering user turn
    detector: str | None = None  # set: the inference step's system message, the pairs its user turn, the reply the behaviour
    demo: str = Layout().demo  # one (question, weak answer) pair, {question} and {answer}
    separator: str = Layout().separator  # between pairs
    cut: int = 0  # characters cut from the end of the joined pairs
    strip_newlines: bool = False  # remove "\n" from the questions and answers shown
    max_sentence_tokens: int = 48  # most tokens generated for the inferred sentence

    def __post_init__(self):
        name = "methods.infer-and-respond"
        if not isinstance(self.batch, int) or self.batch < 2:
            raise ValueError(f"{name}.batch must be an int >= 2, got {self.batch!r}")
        if self.kind not in PREFIXES:
            raise ValueError(f"{name}.kind must be one of {sorted(PREFIXES)}, got {self.kind!r}")
        if self.prefix is not None and (not isinstance(self.prefix, str) or not self.prefix.strip()):
            raise ValueError(f"{name}.prefix must be a non-empty string, got {self.prefix!r}")
        if not isinstance(self.describe, str) or not self.describe.strip():
            raise ValueError(f"{name}.describe must be a non-empty string, got {self.describe!r}")
        if not isinstance(self.respond, str) or self.respond.count("{behaviour}") != 1:
            raise ValueError(f"{name}.respond must contain '{{behaviour}}' exactly once (where the "
                             f"inferred sentence goes), got {self.respond!r}")
        check_text(self.respond_user, f"{name}.respond_user", placeholders=("question",), empty=False)
        if self.detector is not None:
            check_text(self.detector, f"{name}.detector", empty=False)
        try:
            self.layout()
        except ValueError as error:
            raise ValueError(f"{name}.{error}") from None
        if not isinstance(self.max_sentence_tokens, int) or self.max_sentence_tokens < 1:
            raise ValueError(f"{name}.max_sentence_tokens must be an int >= 1, "
                             f"got {self.max_sentence_tokens!r}")

    def layout(self) -> Layout:
        """How the batch's pairs are shown."""
        return Layout(demo=self.demo, separator=self.separator, cut=self.cut,
                      strip_newlines=self.strip_newlines)

    @property
    def sentence_prefix(self) -> str:
        """The fixed beginning of the inferred sentence (``prefix``, else ``kind``'s default)."""
        return (self.prefix if self.prefix is not None else PREFIXES[self.kind]).strip()


def inference_prompt(pairs: list[tuple[str, str]], options: InferAndRespondOptions) -> Prompt:
    """The inference step's prompt for a batch of (question, answer) pairs.

    Default: the pairs as the system message, then the request and the sentence to complete (without
    a chat template the model reads the pairs, the request, and the prefix on the last line, so a
    base model continues the sentence). With ``detector``: the detector as the system message and
    the pairs as the user turn.
    """
    shown = options.layout().demonstrations(pairs)
    if options.detector is not None:
        return Prompt(system=options.detector, user=shown)
    return Prompt(system=shown, user=f"{options.describe}\n{options.sentence_prefix}")


def complete_sentence(prefix: str, continuation: str) -> str:
    """``prefix`` + the generated continuation up to its first line break or sentence end.

    A model that restates the prefix (a chat model answering afresh) has it removed first. Without
    a sentence end a period is added. "e.g." and the like also end the sentence (kept simple).
    """
    text = continuation.lstrip()
    if text.lower().startswith(prefix.lower()):
        text = text[len(prefix):]
    text = text.strip().split("\n", 1)[0].strip()
    end = _SENTENCE_END.search(text)
    text = text[: end.end()] if end else text.rstrip(",;:") + "."
    return f"{prefix} {text}" if text != "." else prefix + "."


@register
class InferAndRespond(Method):
    """Algorithm 2: the strong model names the weak answers' behaviour, then answers following it."""

    name = "infer-and-respond"
    draws = 2  # 2: each hop / the description draws from its own per-row stream
    Options = InferAndRespondOptions
    roles = ("strong",)

    def units(self, ctx):
        return batches(len(ctx.examples), self.options.batch, seed=self.options.shuffle_seed)

    def infer(self, ctx, units) -> list[str]:
        """The inferred sentence of each unit (one strong-model call for the whole chunk)."""
        options = self.options
        prompts = [inference_prompt([(question_text(ctx, p), ctx.weak[p]) for p in unit], options)
                   for unit in units]
        # a batch's sentence draws from its own stream (DESCRIBE), keyed by the batch's first
        # example (batches are disjoint): never the key that example's answer draws from
        texts = ctx.engine("strong").generate(prompts, max_new_tokens=options.max_sentence_tokens,
                                              sampler=ctx.generation.sampler(), key=ctx.folded(DESCRIBE).key,
                                              example_ids=[ctx.examples[unit[0]].index for unit in units])
        if options.detector is not None:
            return [text.strip() for text in texts]
        return [complete_sentence(options.sentence_prefix, text) for text in texts]

    def label(self, ctx, units):
        sentences = self.infer(ctx, units)
        behaviour = {p: sentence for unit, sentence in zip(units, sentences) for p in unit}
        queries = list(behaviour)  # every question of the chunk in one call (length-sorted batches)
        o, layout = self.options, self.options.layout()
        prompts = [Prompt(system=o.respond.replace("{behaviour}", behaviour[p]),
                          user=o.respond_user.format(question=layout.text(question_text(ctx, p))))
                   for p in queries]
        answers = ctx.answer("strong", prompts, queries)
        return [label_row(ctx.examples[p], ctx.task.target(ctx.examples[p], answer), inferred=behaviour[p])
                for p, answer in zip(queries, answers)]
