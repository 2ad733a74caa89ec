"""``ask-to-improve``: the strong model rewrites each weak answer to improve it (Algorithm 3).

For each training question the strong model reads the question and its weak answer, in the
demonstration format of :mod:`~w2s_jax.tasks.demonstrations`, after a system message asking for
an improved answer and nothing else, and its rewrite is the question's training label. Unlike the
in-context methods it sees one weak answer at a time: it can fix that answer but cannot learn,
from other examples, what the weak answers have in common. Unit: one example.
"""

from __future__ import annotations

import dataclasses

from w2s_jax.inference.engine import Prompt
from w2s_jax.methods.base import Method, label_row, register
from w2s_jax.methods.icl_refine import question_text
from w2s_jax.tasks.demonstrations import Layout, check_text, clean_answer, with_query_stop


@dataclasses.dataclass(frozen=True, kw_only=True)
class AskToImproveOptions:
    instruction: str = ("Below are a question and an answer to it. Improve the answer. "
                        "Reply with the improved answer only.")  # the system message
    cue: str = "Improved answer:"  # the last line of the prompt, after a blank line ("": none)
    demo: str = Layout().demo  # the question and its weak answer, {question} and {answer}
    cut: int = 0  # characters cut from the end of the demonstration (before the cue)

    def __post_init__(self):
        name = "methods.ask-to-improve"
        check_text(self.instruction, f"{name}.instruction", empty=False)
        check_text(self.cue, f"{name}.cue")
        try:
            self.layout()
        except ValueError as error:
            raise ValueError(f"{name}.{error}") from None

    def layout(self) -> Layout:
        return Layout(demo=self.demo, cut=self.cut)


def improve_prompt(question: str, weak_answer: str, options: AskToImproveOptions) -> Prompt:
    """The instruction as system message; the question, its weak answer and the cue as user turn."""
    shown = options.layout().demonstrations([(question, weak_answer)])
    return Prompt(system=options.instruction, user=f"{shown}\n\n{options.cue}" if options.cue else shown)


@register
class AskToImprove(Method):
    """Algorithm 3: the strong model rewrites each weak answer to improve it."""

    name = "ask-to-improve"
    Options = AskToImproveOptions
    roles = ("strong",)

    def label(self, ctx, units):
        positions = [p for unit in units for p in unit]
        prompts = [improve_prompt(question_text(ctx, p), ctx.weak[p], self.options) for p in positions]
        examples = [ctx.examples[p] for p in positions]
        # the prompt is in demonstration form, so a base model may go on with a new "Question:"
        texts = ctx.task.answer(ctx.engine("strong"), prompts, examples, with_query_stop(ctx.generation),
                                key=ctx.key)
        return [label_row(example, ctx.task.target(example, clean_answer(text)))
                for example, text in zip(examples, texts)]
