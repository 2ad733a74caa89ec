"""What a task is: its rows, the prompts the models see, how an answer is produced and scored.

A task is one small file: a subclass of :class:`Task` with a ``name``, an ``Options`` frozen
dataclass (the task's own keys of the experiment file's ``[task]`` table), and four methods::

    example(row, index, source) -> Example       # validate one data row
    prompt(example) -> Prompt                     # what the strong model / student is asked
    answer(engine, prompts, examples, gen) -> [str]  # generate (or choose an option)
    metric(examples, predictions, judge) -> [dict]   # per-item scores, the primary one first

Decorate it with :func:`register`; ``w2s list`` and the experiment loader find it by name.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from w2s_jax.inference.engine import Engine, Prompt
from w2s_jax.inference.generation_settings import Generation  # re-exported: tasks answer with it
from w2s_jax.registry import Registry


class DataError(ValueError):
    """A data row that the task cannot use; the message names the file, row and field."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One validated row.

    Attributes:
      index: the row's position in its split (0-based), its identity everywhere downstream.
      question: the text the task asks about.
      answer: the gold answer text (None when the split has none).
      fields: the raw row, for tasks that need more than question and answer (e.g. options).
    """

    index: int
    question: str
    answer: str | None
    fields: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoOptions:
    """For tasks without options of their own."""


class Task(ABC):
    """Base class of every task; see the module docstring."""

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    higher_is_better: ClassVar[bool] = True
    needs_judge: ClassVar[bool] = False  # the metric asks a judge model
    judge_modes: ClassVar[tuple[str, ...] | None] = None  # the judge modes the metric accepts (None: any)

    def __init__(self, options=None):
        self.options = self.Options() if options is None else options

    @abstractmethod
    def example(self, row: Mapping[str, Any], index: int, source: str) -> Example:
        """Validates one row of ``source`` (a file path or hub name); raises :class:`DataError`."""

    @abstractmethod
    def prompt(self, example: Example) -> Prompt:
        """The prompt the strong model and the student answer."""

    def question_text(self, example: Example) -> str:
        """The question as the in-context methods show it (``Question: {this}``); default: the user
        text of :meth:`prompt`. A task whose prompt is already in that format returns the bare
        question here, so the format is not applied twice."""
        return self.prompt(example).user

    def weak_prompt(self, example: Example) -> Prompt:
        """The prompt the weak supervisor answers (default: the same as :meth:`prompt`)."""
        return self.prompt(example)

    def answer(self, engine: Engine, prompts: Sequence[Prompt], examples: Sequence[Example],
               generation: Generation, *, key=None) -> list[str]:
        """Each prompt's answer text (default: generation). A sampled answer draws from
        ``fold_in(key, example.index)``: the same whichever other examples share the call."""
        return engine.generate(list(prompts), max_new_tokens=generation.max_new_tokens,
                               sampler=generation.sampler(), key=key, stop_strings=generation.stop,
                               example_ids=[e.index for e in examples])

    def stated_answer(self, text: str) -> str:
        """The answer a response states, as two responses are compared for agreement (the report's
        misfit). Default: the text with whitespace collapsed, lower-cased; a task that reads a
        final answer out of a response (its grading path) returns that answer instead."""
        return " ".join(str(text).split()).lower()

    def target(self, example: Example, answer: str) -> str:
        """The training completion for an answer (default: the answer, with a leading space
        when the prompt ends in ``Answer:`` style text and the answer has none)."""
        return answer if answer[:1].isspace() or not answer else " " + answer

    @abstractmethod
    def metric(self, examples: Sequence[Example], predictions: Sequence[str], *,
               judge=None) -> list[dict[str, float | None]]:
        """Per-item scores ``{metric_name: value}``; the first key is the primary metric.
        ``None`` marks an item the metric could not score (e.g. every judgement malformed)."""

    def metric_names(self) -> tuple[str, ...]:
        """The keys :meth:`metric` returns, primary first."""
        return ("score",)


def field(row: Mapping[str, Any], name: str, index: int, source: str, *, kind=str) -> Any:
    """``row[name]`` checked to be present, non-empty and of type ``kind``, else a DataError."""
    if name not in row or row[name] is None:
        raise DataError(f"{source}: row {index} has no {name!r} field (fields: {sorted(row)})")
    value = row[name]
    if not isinstance(value, kind):
        raise DataError(f"{source}: row {index} field {name!r} must be {kind.__name__}, "
                        f"got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{source}: row {index} field {name!r} is empty")
    return value


TASKS: Registry[type[Task]] = Registry("task", "w2s_jax.tasks")
register = TASKS.register  # class decorator: make a task available by its ``name``
