"""``explain``: the weak supervisor explains with a technique; does the student pick it up?

Rows hold a question and optionally a gold answer (``{"question": ..., "answer": ...}``; field
names are options). The weak model is given the explanation technique as its system prompt
(:meth:`Explain.weak_prompt`); the strong model and the student see the plain question. The
judge rates every answer on two rubrics, 1-10 by default (the judge's scale):

- ``technique``: adherence to the technique. This is the primary metric: it is the behaviour
  weak-to-strong training is meant to transfer here (as the style is in ``persona``).
- ``accuracy``: the factual accuracy of the explanation; when the row has a gold answer the
  judge is shown it as a reference.

Per item: ``{"technique": score, "accuracy": score, "_malformed": malformed judgements}``.

With ``judge.mode = "joint"`` one request returns both ratings: ``judge_system`` (default: the
judge prompt of Somerstep et al., ICLR 2025, ``prompts_simple.py`` of UMich-FATML/w2s-refinement:
accuracy and use of analogies, 0-10, no reference answer), ``judge_user`` and ``judge_order``.
``weak_template``, ``system`` and ``weak_system_in_user`` as in ``persona``.
"""

from __future__ import annotations

import dataclasses

from w2s_jax.tasks.base import register
from w2s_jax.tasks.fields import check_name
from w2s_jax.tasks.judged import WeakSystemTask, check_judge_options, check_template, check_weak_options
from w2s_jax.tasks.persona import PAPER_JUDGE_USER

ANALOGY = "Explain using an analogy to everyday life."
TECHNIQUE_RUBRIC = ("Rate only how well the response follows this explanation technique: "
                    "\"{technique}\" The lowest rating means the technique is not used at all; the "
                    "highest means the whole explanation is built on it. Ignore whether the content is "
                    "correct.")
ACCURACY_RUBRIC = ("Rate only the factual accuracy of the response as an answer to the question: "
                   "the lowest rating for a wrong or misleading answer, the highest for a fully "
                   "correct one. Ignore the style of the explanation.")
# The joint judge of Somerstep et al. (ICLR 2025), GetEvalSystemPrompt in prompts_simple.py of
# UMich-FATML/w2s-refinement.
PAPER_JUDGE = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider two primary "
    "factors. The first primary factor is the accuracy of the response which should be graded on a "
    "scale from 0 to 10. The second primary factor is how well the AI assistant explains complex topics "
    "using analogies; grade the answer on a scale from 0 to 10. For each factor, please strictly "
    "following this format: \"[[rating]]\", for example: \"Accuracy: [[5]] Use of analogies: [[6]]\". "
    "Please do not include anything in your response except the scores.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExplainOptions:
    question_field: str = "question"  # the row field holding the question
    answer_field: str | None = "answer"  # the gold answer (optional per row): the judge's reference ("": none)
    technique: str = ANALOGY  # the weak model's system prompt
    technique_rubric: str = TECHNIQUE_RUBRIC  # may use {technique}
    accuracy_rubric: str = ACCURACY_RUBRIC
    system: str | None = None  # the strong model's and the student's system prompt (None: none)
    weak_template: str = "{question}"  # the weak model's user turn
    weak_system_in_user: bool = False  # the weak model reads "technique\nuser turn" as one user turn
    judge_system: str | None = PAPER_JUDGE  # judge.mode = "joint": the judge's system message
    judge_user: str = PAPER_JUDGE_USER  # judge.mode = "joint": the judge's user turn, {question} {answer}
    judge_order: tuple[str, ...] = ("accuracy", "technique")  # judge.mode = "joint": the ratings in the order asked

    def __post_init__(self):
        check_name(self.question_field, "task.question_field")
        if self.answer_field == "":
            object.__setattr__(self, "answer_field", None)
        if self.answer_field is not None:
            check_name(self.answer_field, "task.answer_field")
        if not isinstance(self.technique, str) or not self.technique.strip():
            raise ValueError(f"task.technique must be a non-empty string, got {self.technique!r}")
        check_template(self.technique_rubric, "task.technique_rubric", technique=self.technique)
        check_template(self.accuracy_rubric, "task.accuracy_rubric", technique=self.technique)
        check_weak_options(self)
        check_judge_options(self, Explain.rubric_names)


@register
class Explain(WeakSystemTask):
    """Questions explained with a technique by the weak model; judged on technique and accuracy."""

    name = "explain"
    Options = ExplainOptions
    rubric_names = ("technique", "accuracy")

    question_option = "question_field"
    system_option = "technique"

    def rubrics(self, example):
        o = self.options
        accuracy = o.accuracy_rubric.format(technique=o.technique)
        if example.answer is not None:
            accuracy += f"\nA reference answer: {example.answer.strip()}"
        return {"technique": o.technique_rubric.format(technique=o.technique), "accuracy": accuracy}
