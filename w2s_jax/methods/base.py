"""What a label method is: a strategy that turns weak labels into the student's training labels.

A method is one small file: a :class:`Method` subclass with a ``name``, an ``Options`` frozen
dataclass (its table ``[methods.<name>]`` in the experiment file), and two methods::

    units(ctx) -> list[tuple[int, ...]]   # the work, split into independent units of positions
    label(ctx, units) -> list[dict]       # one label row per trained example of those units

The pipeline runs ``label`` over chunks of units and appends each chunk's rows to a JSONL file,
so a killed run resumes at the last finished chunk; a unit is never split (a batch of B questions
refined together is one unit). A label row is ``{"index": example.index, "completion": str}``,
optionally with ``"teacher_ids"``/``"teacher_probs"`` (per completion token, top-k of a teacher's
next-token distribution) for methods that fit a distribution rather than text.

Decorate the class with :func:`register`; ``w2s list`` and the experiment loader find it by name.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from w2s_jax.inference.engine import Engine, Prompt
from w2s_jax.registry import Registry
from w2s_jax.inference.generation_settings import Generation
from w2s_jax.tasks.base import Example, NoOptions, Task


@dataclasses.dataclass
class MethodContext:
    """Everything a method may read. Built by the pipeline; methods never load files or models.

    Attributes:
      task: the task object (prompts, answering, targets).
      examples: the training examples, in split order.
      weak: the weak supervisor's answer per example (aligned with ``examples``).
      upstream: label rows of the methods this one ``needs``, as ``{method: {index: row}}``.
      engine: ``engine(role)`` returns the loaded model for a role: ``"strong"`` or
        ``"intermediate:<i>"`` (the chain of the experiment's ``models.intermediate``).
      generation: answer generation settings.
      key: this method's PRNG key (fold in example indices for per-example randomness).
      num_intermediate: the number of intermediate models.
      upstream_options: the options of the methods in ``upstream`` (a method that builds on
        another reads its settings from there, so they are said once).
    """

    task: Task
    examples: Sequence[Example]
    weak: Sequence[str]
    upstream: Mapping[str, Mapping[int, dict]]
    engine: Callable[[str], Engine]
    generation: Generation
    key: Any = None
    num_intermediate: int = 0
    upstream_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # by method, as ``upstream``

    def folded(self, stream: int) -> "MethodContext":
        """This context with its key folded with ``stream``: for a method that samples twice per
        example (a hop of a chain, a step before the answer), each draw its own key,
        ``fold_in(fold_in(key, stream), example index)``, never the answer's."""
        if self.key is None:
            return self
        import jax

        return dataclasses.replace(self, key=jax.random.fold_in(self.key, stream))

    def answer(self, role: str, prompts: Sequence[Prompt], positions: Sequence[int]) -> list[str]:
        """The ``role`` model's answers to ``prompts`` (one per position in ``examples``)."""
        examples = [self.examples[p] for p in positions]
        return self.task.answer(self.engine(role), prompts, examples, self.generation, key=self.key)


class Method(ABC):
    """Base class of every label method; see the module docstring.

    Class attributes:
      name: the name used in experiment files.
      Options: a frozen dataclass of the method's settings.
      needs: other methods whose labels this one reads (their stages run first).
      uses_weak: reads the weak labels (False for ``gold``: its labels do not depend on a weak model).
      trains: the student is fine-tuned on the labels (False for ``zero-shot``).
      needs_gold: requires gold answers in the training split.
      roles: model roles used besides the weak labels (``"strong"``, ``"intermediate"``).
      draws: the version of how the method's sampled labels draw their randomness; bumped when
        that changes, so labels sampled the old way are never reused (greedy labels keep their
        keys: they draw nothing).
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    needs: ClassVar[tuple[str, ...]] = ()
    uses_weak: ClassVar[bool] = True
    trains: ClassVar[bool] = True
    needs_gold: ClassVar[bool] = False
    roles: ClassVar[tuple[str, ...]] = ()
    draws: ClassVar[int] = 1

    def __init__(self, options=None):
        self.options = self.Options() if options is None else options

    def check(self, methods: Mapping[str, "Method"]) -> None:
        """Refuses settings that contradict the other methods of the run (by name), with a
        ValueError naming both; called when the experiment is loaded. Default: nothing to check."""

    def units(self, ctx: MethodContext) -> list[tuple[int, ...]]:
        """Independent units of work as positions into ``ctx.examples`` (default: one each)."""
        return [(position,) for position in range(len(ctx.examples))]

    @abstractmethod
    def label(self, ctx: MethodContext, units: Sequence[tuple[int, ...]]) -> list[dict]:
        """Label rows ``{"index", "completion", ...}`` for the examples of ``units``."""

    def describe(self) -> str:
        """One line for ``w2s list``: the first line of the class docstring."""
        return (self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else ""


def label_row(example: Example, completion: str, **extra: Any) -> dict:
    """A label row for ``example`` (see the module docstring)."""
    return {"index": example.index, "completion": completion, **extra}


METHODS: Registry[type[Method]] = Registry("method", "w2s_jax.methods")
register = METHODS.register  # class decorator: make a method available by its ``name``
