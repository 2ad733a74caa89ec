"""``choice``: multiple choice and classification, answered by likelihood (no generation).

Rows: ``{"question": "Is the sky blue?", "options": ["yes", "no"], "label": 0}``. Field names are
options; ``options_field`` may also name several columns (``["A", "B", "C", "D"]``, the usual CSV
layout). The gold ``label`` is an option's 0-based index, its exact text, or its letter (``"B"``
for the second option; used only when no option's text is that letter). A row without a label is
unlabelled (``answer`` None).

The prompt is the question, then ``Options:`` and one ``- option`` line each, then
``answer_prefix`` on its own line when set (e.g. ``"Answer:"`` for a base model). A model's
answer is the option whose completion ``" " + option`` is most likely given the prompt
(:meth:`~w2s_jax.inference.Engine.score`; the training target is the same ``" " + option``). How
options of different lengths are compared is ``normalize``:

- ``"char"`` (default): log-probability per byte of ``" " + option`` (lm-evaluation-harness's
  ``acc_norm``). A sum favours short options; per byte the measure does not depend on the
  tokenizer, so weak and strong models with different tokenizers are judged alike.
- ``"token"``: log-probability per completion token.
- ``"sum"``: the total log-probability, ``log p(option | prompt)``.

Ties go to the earlier option. Metric: ``{"accuracy": 0 or 1}`` (None for an unlabelled row).
"""

from __future__ import annotations

import dataclasses
import math

from w2s_jax.inference.engine import Prompt
from w2s_jax.tasks.base import DataError, Example, Task, register
from w2s_jax.tasks.fields import as_text, check_name, text_field

NORMALIZATIONS = ("char", "token", "sum")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChoiceOptions:
    question_field: str = "question"  # the row field holding the question
    options_field: str | tuple[str, ...] = "options"  # a list-valued field, or one column per option
    label_field: str = "label"  # gold: 0-based index, option text or letter (may be absent)
    normalize: str = "char"  # "char", "token" or "sum" (see the module docstring)
    answer_prefix: str = ""  # a line after the options, e.g. "Answer:" for base models

    def __post_init__(self):
        check_name(self.question_field, "task.question_field")
        check_name(self.label_field, "task.label_field")
        if isinstance(self.options_field, (list, tuple)):
            object.__setattr__(self, "options_field", tuple(self.options_field))
            if len(self.options_field) < 2:
                raise ValueError(f"task.options_field lists {len(self.options_field)} column(s); "
                                 "give one list-valued field or at least two columns")
            for name in self.options_field:
                check_name(name, "task.options_field entry")
        else:
            check_name(self.options_field, "task.options_field")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"task.normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if not isinstance(self.answer_prefix, str):
            raise ValueError(f"task.answer_prefix must be a string, got {self.answer_prefix!r}")


def _label_index(label, options: tuple[str, ...], name: str, index: int, source: str) -> int:
    """The option a gold label names (index, text or letter), or a DataError listing the options."""
    if isinstance(label, float) and label.is_integer():  # an int column with gaps reads as floats
        label = int(label)
    if isinstance(label, int) and not isinstance(label, bool):
        if 0 <= label < len(options):
            return label
    elif isinstance(label, str):
        text = label.strip()
        if text in options:
            return options.index(text)
        if len(text) == 1 and "A" <= text.upper() <= "Z" and ord(text.upper()) - 65 < len(options):
            return ord(text.upper()) - 65
    raise DataError(f"{source}: row {index} field {name!r} = {label!r} names none of the "
                    f"{len(options)} options {list(options)} (give a 0-based index, the option's "
                    "text or its letter)")


@register
class Choice(Task):
    """Multiple choice / classification: the most likely option given the prompt (no generation)."""

    name = "choice"
    Options = ChoiceOptions

    def options_of(self, row, index: int = 0, source: str = "row") -> tuple[str, ...]:
        """The options of a row, stripped, validated (at least two, all distinct)."""
        o = self.options
        if isinstance(o.options_field, tuple):
            options = tuple(text_field(row, name, index, source).strip() for name in o.options_field)
        else:
            if o.options_field not in row or row[o.options_field] is None:
                raise DataError(f"{source}: row {index} has no {o.options_field!r} field "
                                f"(fields: {sorted(row)})")
            values = row[o.options_field]
            if isinstance(values, str) or not isinstance(values, (list, tuple)):
                raise DataError(f"{source}: row {index} field {o.options_field!r} must be a list of "
                                f"options, got {type(values).__name__} {str(values)[:60]!r}")
            options = tuple(as_text(v, f"{o.options_field}[{i}]", index, source).strip()
                            for i, v in enumerate(values))
        if len(options) < 2:
            raise DataError(f"{source}: row {index} has {len(options)} option(s); a choice needs at least 2")
        if len(set(options)) != len(options):
            raise DataError(f"{source}: row {index} has repeated options {list(options)}")
        return options

    def example(self, row, index, source):
        o = self.options
        question = text_field(row, o.question_field, index, source)
        options = self.options_of(row, index, source)
        label = row.get(o.label_field)
        if label is None or (isinstance(label, float) and math.isnan(label)):
            answer = None
        else:
            answer = options[_label_index(label, options, o.label_field, index, source)]
        return Example(index=index, question=question, answer=answer, fields=row)

    def prompt(self, example):
        lines = [example.question.strip(), "Options:"]
        lines += [f"- {option}" for option in self.options_of(example.fields, example.index)]
        if self.options.answer_prefix.strip():
            lines.append(self.options.answer_prefix.strip())
        return Prompt(user="\n".join(lines))

    def answer(self, engine, prompts, examples, generation, *, key=None):
        """The most likely option of each example given its prompt (``generation`` is unused)."""
        if len(prompts) != len(examples):
            raise ValueError(f"{len(prompts)} prompts but {len(examples)} examples")
        options = [self.options_of(example.fields, example.index) for example in examples]
        pair_prompts = [p for p, opts in zip(prompts, options) for _ in opts]
        completions = [" " + option for opts in options for option in opts]
        scores = engine.score(pair_prompts, completions)
        answers, start = [], 0
        for opts in options:
            mine = scores[start:start + len(opts)]
            start += len(opts)
            values = [self.option_score(result, " " + option) for result, option in zip(mine, opts)]
            answers.append(opts[max(range(len(opts)), key=lambda i: (values[i], -i))])
        return answers

    def option_score(self, result, completion: str) -> float:
        """The comparable score of one option under ``normalize`` (see the module docstring)."""
        if self.options.normalize == "sum":
            return result.sum_logprob
        if self.options.normalize == "token":
            return result.sum_logprob / len(result.token_logprobs)
        return result.sum_logprob / len(completion.encode("utf-8"))

    def metric(self, examples, predictions, *, judge=None):
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
        return [{"accuracy": None if example.answer is None else float(prediction.strip() == example.answer)}
                for example, prediction in zip(examples, predictions)]

    def metric_names(self):
        return ("accuracy",)
