"""``qa``: your own data as a task, described entirely in the experiment file.

This is the reference for bringing your own task. Each row of your .jsonl/.json/.csv/.parquet
file is one example; you say which fields make the prompt, which holds the gold answer and how
answers are scored::

    [task]
    name = "qa"
    template = "Translate to French: {sentence}"   # the prompt, with {field} placeholders
    answer_field = "french"                          # the gold answer's field (optional per row)
    metric = "exact"                                 # "exact", "number", "contains" or "judge"
    weak_system = "Answer tersely."                  # optional: a system prompt for the weak model only
    rubric = "..."                                   # metric = "judge" only: what the judge rates

Keys:

- ``template``: the question the models see. ``{name}`` is replaced by the row's field ``name``
  (text, or a number written as text); ``{{`` and ``}}`` are literal braces. Every placeholder must
  be a field of every row: all rows are checked before anything runs, and a missing or empty field
  is an error naming the file, the row (0-based) and the field.
- ``answer_field``: the gold answer, used as the training target of the ``gold`` method and by the
  metric. A row without it is unlabelled (it can be trained on with weak labels but not scored).
  ``""`` or omitted from the file: the data has no gold answers at all.
- ``weak_system``: the weak supervisor's system prompt (e.g. a persona or a technique whose
  transfer you want to measure); the strong model and the student never see it.
- ``metric`` (per item, the report averages):
    - ``exact``: 1 when the answer equals the gold answer after SQuAD normalisation (lower case,
      punctuation and a/an/the removed, whitespace collapsed), else 0.
    - ``number``: 1 when the final number of the answer equals the gold's (read as in the ``math``
      task: ``#### x``, ``\\boxed{x}``, ``answer is x``, else the last number; ``3/4 == 0.75``).
      Every gold answer must hold a number.
    - ``contains``: 1 when the normalised gold answer occurs in the normalised answer as whole words.
    - ``judge``: the judge model's rating of the answer against ``rubric`` (scale and sampling in
      the experiment's ``[judge]`` table); a row's gold answer, when present, is shown to the judge
      as a reference. Adds ``_malformed``, the judgements that gave no valid rating.
"""

from __future__ import annotations

import dataclasses
import string

from w2s_jax.inference.engine import Prompt
from w2s_jax.tasks.answers import extract_number, gold_number, normalize_text
from w2s_jax.tasks.base import DataError, Example, register
from w2s_jax.tasks.fields import as_text, check_name, optional_text_field
from w2s_jax.tasks.judged import JudgedTask

METRICS = ("exact", "number", "contains", "judge")


def template_fields(template: str) -> tuple[str, ...]:
    """The field names a prompt template uses, in order of first use; a ValueError for a template
    that ``str.format`` cannot fill from named fields."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(f"task.template {template!r}: {error} (write {{{{ and }}}} for literal braces)") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"task.template {template!r}: placeholder {{{name}}} must be a plain field "
                             "name (no positions, attributes or indices)")
        if spec or conversion:
            raise ValueError(f"task.template {template!r}: placeholder {{{name}}} has a format spec or "
                             "conversion; write {name} alone")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"task.template {template!r} has no {{field}} placeholder")
    return tuple(names)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QAOptions:
    template: str = "{question}"  # the prompt, with {field} placeholders
    answer_field: str | None = "answer"  # the gold answer's field ("" or None: no gold answers)
    weak_system: str | None = None  # the weak model's system prompt
    metric: str = "exact"  # "exact", "number", "contains" or "judge"
    rubric: str | None = None  # what the judge rates (metric = "judge" only)

    def __post_init__(self):
        if not isinstance(self.template, str):
            raise ValueError(f"task.template must be a string, got {self.template!r}")
        template_fields(self.template)
        if self.answer_field == "":
            object.__setattr__(self, "answer_field", None)
        if self.answer_field is not None:
            check_name(self.answer_field, "task.answer_field")
        if self.weak_system is not None and (not isinstance(self.weak_system, str) or not self.weak_system.strip()):
            raise ValueError(f"task.weak_system must be a non-empty string, got {self.weak_system!r}")
        if self.metric not in METRICS:
            raise ValueError(f"task.metric must be one of {METRICS}, got {self.metric!r}")
        if self.metric == "judge":
            if not isinstance(self.rubric, str) or not self.rubric.strip():
                raise ValueError('task.metric = "judge" needs task.rubric: what the judge rates, e.g. '
                                 '"Rate how correct and complete the answer is."')
        elif self.rubric is not None:
            raise ValueError(f"task.rubric is only used with metric = \"judge\" (metric is {self.metric!r})")
        if self.metric != "judge" and self.answer_field is None:
            raise ValueError(f"task.metric = {self.metric!r} compares with gold answers: set task.answer_field")


@register
class QA(JudgedTask):
    """Your own data: a prompt template over its fields, a gold-answer field and a metric."""

    name = "qa"
    Options = QAOptions
    rubric_names = ("judge",)

    def __init__(self, options=None):
        super().__init__(options)
        self.needs_judge = self.options.metric == "judge"
        self.fields = template_fields(self.options.template)

    def example(self, row, index, source):
        o = self.options
        values = {}
        for name in self.fields:
            if name not in row or row[name] is None:
                raise DataError(f"{source}: row {index} has no {name!r} field, which task.template uses "
                                f"(fields: {sorted(row)})")
            values[name] = as_text(row[name], name, index, source)
        answer = optional_text_field(row, o.answer_field, index, source)
        if answer is not None and o.metric == "number" and gold_number(answer) is None:
            raise DataError(f"{source}: row {index} field {o.answer_field!r} holds no number for "
                            f"metric \"number\" (expected '#### <number>', '\\boxed{{<number>}}' or "
                            f"a number): {answer[-80:]!r}")
        return Example(index=index, question=o.template.format_map(values), answer=answer, fields=row)

    def prompt(self, example):
        return Prompt(user=example.question)

    def weak_prompt(self, example):
        return Prompt(user=example.question, system=self.options.weak_system)

    def rubrics(self, example):
        rubric = self.options.rubric.strip()
        if example.answer is not None:
            rubric += f"\nA reference answer: {example.answer.strip()}"
        return {"judge": rubric}

    def metric(self, examples, predictions, *, judge=None):
        metric = self.options.metric
        if metric == "judge":
            return super().metric(examples, predictions, judge=judge)
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
        return [{metric: None if example.answer is None else float(self.matches(prediction, example.answer))}
                for example, prediction in zip(examples, predictions)]

    def matches(self, prediction: str, gold: str) -> bool:
        """Whether an answer is right under the ``exact``, ``number`` or ``contains`` metric."""
        metric = self.options.metric
        if metric == "number":
            value = extract_number(prediction)
            return value is not None and value == gold_number(gold)
        answer, reference = normalize_text(prediction), normalize_text(gold)
        if metric == "exact":
            return answer == reference
        return bool(reference) and f" {reference} " in f" {answer} "

    def stated_answer(self, text):
        """As ``metric`` reads an answer: the final number (``number``), else SQuAD-normalised text."""
        if self.options.metric == "number":
            value = extract_number(text)
            if value is not None:
                return f"number {value}"
        return normalize_text(text)

    def metric_names(self):
        return super().metric_names() if self.options.metric == "judge" else (self.options.metric,)
