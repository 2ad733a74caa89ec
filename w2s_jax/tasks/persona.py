"""``persona``: the weak supervisor answers in a persona's voice; does the student pick the style up?

Rows hold an instruction (``{"instruction": "How do magnets work?"}``; the field is an option).
The weak model is given the persona as its system prompt (:meth:`Persona.weak_prompt`); the strong
model and the student see the plain instruction (:meth:`Persona.prompt`), so any persona in the
student's answers came from the weak labels. The judge rates every answer on two rubrics, 1-10 by
default (the judge's scale):

- ``style``: adherence to the persona. This is the primary metric: in the persona setting it is
  the style, not the content, that weak-to-strong training is meant to transfer.
- ``quality``: the content's helpfulness and correctness, whatever the style (what the strong
  model must not lose while taking on the style).

Per item: ``{"style": score, "quality": score, "_malformed": malformed judgements}``; a score is
None when all of its judgements were malformed.

With ``judge.mode = "joint"`` one request returns both ratings: ``judge_system`` (default: the
judge prompt of Somerstep et al., ICLR 2025, ``prompts_persona.py`` of UMich-FATML/w2s-refinement,
for the pirate persona), ``judge_user`` and ``judge_order`` (the order the prompt asks for them).
``instruction_field`` may list several fields, the first one a row has being used (training and
test data with different field names); a row read from ``tinymmlu_field`` is rewritten as the
paper's tinyMMLU question. ``weak_template`` is the weak model's user turn, ``system`` the system message of the strong model
and the student, ``weak_system_in_user`` puts the weak system prompt in the user turn instead.
"""

from __future__ import annotations

import dataclasses

from w2s_jax.tasks.base import register
from w2s_jax.tasks.fields import check_name
from w2s_jax.tasks.judged import (
    WeakSystemTask,
    check_fields,
    check_judge_options,
    check_template,
    check_weak_options,
)

PIRATE = "You are a pirate. Answer every question in the voice of a pirate."
STYLE_RUBRIC = ("Rate only how well the response adopts this persona: \"{persona}\" The lowest rating "
                "means no trace of the persona; the highest means every sentence is consistently in "
                "the persona's voice. Ignore whether the content is correct.")
QUALITY_RUBRIC = ("Rate only the quality of the response's content: how correct, helpful, relevant "
                  "and complete it is as an answer to the question. Ignore its style, tone and voice.")
# The joint judge of Somerstep et al. (ICLR 2025), GetEvalSystemPrompt("pirate") in prompts_persona.py
# and GetEvalUserPrompt in prompts_general.py of UMich-FATML/w2s-refinement.
PAPER_JUDGE = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider two primary "
    "factors. The first primary factor is the content of the response, this includes criteria such as "
    "the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. The "
    "second primary factor is the writing style of the response. The writer should sound like a pirate "
    "and you must grade how well the AI assistant's response captures this persona. Please provide two "
    "ratings for the response on a scale of 1 to 10. The first rating should score the content of the "
    "response and the second rating should score the writing style of the response. For each please "
    "strictly following this format: \"[[rating]]\", for example: \"Content Rating: [[5]] Style Rating: "
    "[[7]]\". Please do not include anything in your response except the scores.")
PAPER_JUDGE_USER = "Question: {question}\n\nAnswer: {answer}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PersonaOptions:
    instruction_field: str | tuple[str, ...] = "instruction"  # the row field holding the request (a list: the first a row has)
    tinymmlu_field: str | None = None  # a row read from this field is a tinyMMLU prompt, asked as the paper did
    answer_field: str | None = None  # an optional reference response (the gold training target)
    persona: str = PIRATE  # the weak model's system prompt
    style_rubric: str = STYLE_RUBRIC  # may use {persona}
    quality_rubric: str = QUALITY_RUBRIC
    system: str | None = None  # the strong model's and the student's system prompt (None: none)
    weak_template: str = "{question}"  # the weak model's user turn
    weak_system_in_user: bool = False  # the weak model reads "persona\nuser turn" as one user turn
    judge_system: str | None = PAPER_JUDGE  # judge.mode = "joint": the judge's system message
    judge_user: str = PAPER_JUDGE_USER  # judge.mode = "joint": the judge's user turn, {question} {answer}
    judge_order: tuple[str, ...] = ("quality", "style")  # judge.mode = "joint": the ratings in the order asked

    def __post_init__(self):
        check_fields(self.instruction_field, "task.instruction_field")
        if self.tinymmlu_field is not None:
            check_name(self.tinymmlu_field, "task.tinymmlu_field")
        if self.answer_field is not None:
            check_name(self.answer_field, "task.answer_field")
        if not isinstance(self.persona, str) or not self.persona.strip():
            raise ValueError(f"task.persona must be a non-empty string, got {self.persona!r}")
        check_template(self.style_rubric, "task.style_rubric", persona=self.persona)
        check_template(self.quality_rubric, "task.quality_rubric", persona=self.persona)
        check_weak_options(self)
        check_judge_options(self, Persona.rubric_names)


@register
class Persona(WeakSystemTask):
    """Instructions answered in a persona's voice by the weak model; judged on style and quality."""

    name = "persona"
    Options = PersonaOptions
    rubric_names = ("style", "quality")

    question_option = "instruction_field"
    system_option = "persona"

    def rubrics(self, example):
        o = self.options
        return {"style": o.style_rubric.format(persona=o.persona),
                "quality": o.quality_rubric.format(persona=o.persona)}
