"""``concept``: one input token in, one output token out, as in the concept world.

Rows are ``{"question": "x12", "answer": "y3"}`` (``w2s_jax.concept_world`` writes them: the
question is an input token, the gold answer its output under the target concept). Every model
reads a question in the pre-training documents' format, ``Question: x12\\nAnswer:``, and the
in-context methods show the bare token in their own ``Question: ... / Answer: ...`` pairs
(:meth:`question_text`), so every prompt is in-distribution for a model pre-trained on the world.
The metric is accuracy: the first word of the prediction equals the gold token.
"""

from __future__ import annotations

import dataclasses

from w2s_jax.inference.engine import Prompt
from w2s_jax.tasks.base import DataError, Example, Task, field, register
from w2s_jax.tasks.demonstrations import clean_answer, query


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConceptOptions:
    question_field: str = "question"  # the input token's field
    answer_field: str = "answer"  # the gold output token's field


def first_word(text: str) -> str:
    """The first whitespace-separated word of an answer (empty for an empty answer)."""
    words = clean_answer(text).split()
    return words[0] if words else ""


@register
class Concept(Task):
    """Concept world: answer an input token with its output token (accuracy)."""

    name = "concept"
    Options = ConceptOptions

    def example(self, row, index, source):
        question = field(row, self.options.question_field, index, source).strip()
        if len(question.split()) != 1:
            raise DataError(f"{source}: row {index} field {self.options.question_field!r} must be one "
                            f"token, got {question!r}")
        answer = row.get(self.options.answer_field)
        if answer is not None:
            answer = field(row, self.options.answer_field, index, source).strip()
        return Example(index=index, question=question, answer=answer, fields=row)

    def prompt(self, example):
        return Prompt(user=query(example.question))

    def question_text(self, example):
        return example.question

    def metric(self, examples, predictions, *, judge=None):
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
        return [{"accuracy": None if e.answer is None else float(first_word(p) == e.answer)}
                for e, p in zip(examples, predictions)]

    def stated_answer(self, text):
        """The first word, as ``metric`` reads an answer."""
        return first_word(text)

    def metric_names(self):
        return ("accuracy",)
