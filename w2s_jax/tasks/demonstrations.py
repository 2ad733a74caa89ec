"""In-context demonstrations: the prompt format shared by the refinement methods.

By default a demonstration is ``Question: {q}\\nAnswer: {a}``, demonstrations are joined by blank
lines, and the query is ``Question: {q}\\nAnswer:``. The demonstrations travel as the prompt's
system message and the query as its user message: with a chat template that is the chat form, and
without one :class:`~w2s_jax.inference.Prompt` renders them as ``demonstrations + "\\n\\n" + query``,
the plain few-shot form.

Every part of that is a :class:`Layout` field, so an experiment file can set another layout (e.g.
a published paper's: the demonstrations in the user turn before the query, a separator of its
own, newlines removed from the texts); :func:`in_context_prompt` with the default layout is the
form above.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from w2s_jax.inference.engine import Prompt

QUERY_STOP = "\n\nQuestion:"  # a base model that starts the next demonstration has finished
PLACEMENTS = ("system", "user")


def demonstration(question: str, answer: str) -> str:
    """``Question: {q}\\nAnswer: {a}``."""
    return f"Question: {question}\nAnswer: {answer.strip()}"


def query(question: str) -> str:
    """``Question: {q}\\nAnswer:``."""
    return f"Question: {question}\nAnswer:"


def check_text(value, what: str, *, placeholders: Sequence[str] = (), empty: bool = True) -> None:
    """``value`` must be a string (non-blank unless ``empty``) that formats with exactly
    ``placeholders`` (each used once at most; others are errors naming ``what``)."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ValueError(f"{what} must be a {'' if empty else 'non-empty '}string, got {value!r}")
    try:
        value.format(**{name: "" for name in placeholders})
    except (KeyError, IndexError, ValueError) as error:
        allowed = ", ".join("{" + p + "}" for p in placeholders) or "none"
        raise ValueError(f"{what}: bad placeholder or brace ({error}); allowed: {allowed} "
                         "(write {{ and }} for literal braces)") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    """How (question, answer) demonstrations and a query are laid out in a prompt."""

    placement: str = "system"  # "system": demonstrations = system message, query = user turn; "user": both in the user turn
    demo: str = "Question: {question}\nAnswer: {answer}"  # one demonstration (the answer is stripped first)
    separator: str = "\n\n"  # between demonstrations
    query: str = "Question: {question}\nAnswer:"  # the query
    query_separator: str = "\n\n"  # between the last demonstration and the query ("user" placement)
    system: str | None = None  # the system message with "user" placement (None: none)
    strip_newlines: bool = False  # remove every "\n" from questions and answers before formatting
    cut: int = 0  # characters cut from the end of the joined demonstrations

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        check_text(self.demo, "demo", placeholders=("question", "answer"), empty=False)
        check_text(self.query, "query", placeholders=("question",), empty=False)
        for name, needed in (("demo", ("{question}", "{answer}")), ("query", ("{question}",))):
            missing = [p for p in needed if p not in getattr(self, name)]
            if missing:
                raise ValueError(f"{name} must contain {' and '.join(missing)}, got {getattr(self, name)!r}")
        check_text(self.separator, "separator")
        check_text(self.query_separator, "query_separator")
        if self.system is not None:
            check_text(self.system, "system")
        if not isinstance(self.strip_newlines, bool):
            raise ValueError(f"strip_newlines must be true or false, got {self.strip_newlines!r}")
        if isinstance(self.cut, bool) or not isinstance(self.cut, int) or self.cut < 0:
            raise ValueError(f"cut must be an int >= 0, got {self.cut!r}")

    def text(self, value: str) -> str:
        return value.replace("\n", "") if self.strip_newlines else value

    def demonstrations(self, demos: Sequence[tuple[str, str]]) -> str:
        """The demonstrations joined, ``cut`` characters removed from the end."""
        joined = self.separator.join(self.demo.format(question=self.text(q), answer=self.text(a).strip())
                                     for q, a in demos)
        return joined[: len(joined) - self.cut] if self.cut else joined

    def prompt(self, demos: Sequence[tuple[str, str]], question: str) -> Prompt:
        """The query after its demonstrations ((question, answer) pairs, in order)."""
        block = self.demonstrations(demos)
        asked = self.query.format(question=self.text(question))
        if self.placement == "system":
            return Prompt(user=asked, system=block or None)
        return Prompt(user=f"{block}{self.query_separator}{asked}" if block else asked,
                      system=self.system or None)


def layout_options(options, where: str) -> Layout:
    """The :class:`Layout` of a method's options (fields ``placement``, ``demo``, ``separator``,
    ``query``, ``query_separator``, ``demo_system``, ``strip_newlines``, ``cut``); errors name ``where``."""
    try:
        return Layout(placement=options.placement, demo=options.demo, separator=options.separator,
                      query=options.query, query_separator=options.query_separator,
                      system=options.demo_system, strip_newlines=options.strip_newlines, cut=options.cut)
    except ValueError as error:
        raise ValueError(f"{where}.{error}") from None


def in_context_prompt(demos: Sequence[tuple[str, str]], question: str, layout: Layout = Layout()) -> Prompt:
    """The query after its demonstrations ((question, answer) pairs, in order), laid out by ``layout``."""
    return layout.prompt(demos, question)


def batches(num: int, size: int, *, seed: int | None = None) -> list[tuple[int, ...]]:
    """Positions ``0..num-1`` (shuffled with ``seed`` unless None) cut into consecutive batches of
    ``size``; a last batch of one is merged into the one before, so every query has at least one
    demonstration from its batch."""
    if size < 2:
        raise ValueError(f"batch size must be >= 2 (a query needs another item as demonstration), got {size}")
    order = list(range(num))
    if seed is not None:
        random.Random(seed).shuffle(order)
    out = [tuple(order[i : i + size]) for i in range(0, num, size)]
    if len(out) > 1 and len(out[-1]) == 1:
        last = out.pop()  # popped first: `out[-2] += out.pop()` would overwrite the wrong batch
        out[-1] += last
    return out


DRAWS = ("batch", "fresh")  # a refined label's demonstrations: its batch's other questions, or its own draw


def fresh_demos(key, pool: int, query: int, n: int) -> tuple[int, ...]:
    """``n`` distinct positions of ``0..pool-1``, never ``query``, drawn uniformly without
    replacement (in drawn order) from ``key``: one query's own demonstrations (assumption A4 of
    ``docs/theory.md``). Key it by the query's row (``fold_in(key, example index)``), never by its
    chunk, and the draw is the same however the work is split."""
    if not 0 <= query < pool:
        raise ValueError(f"query position {query} is outside a pool of {pool}")
    if not 0 <= n <= pool - 1:
        raise ValueError(f"cannot draw {n} demonstrations from the {pool - 1} other questions of the pool")
    import jax
    import numpy as np

    order = np.asarray(jax.random.permutation(key, pool - 1))[:n]
    return tuple(int(i) + int(i >= query) for i in order)  # skip the query's own position


def with_query_stop(generation):
    """``generation`` (a :class:`~w2s_jax.inference.generation_settings.Generation`) that also stops at :data:`QUERY_STOP`."""
    if QUERY_STOP in generation.stop:
        return generation
    return dataclasses.replace(generation, stop=generation.stop + (QUERY_STOP,))


def clean_answer(text: str) -> str:
    """A generated answer cut where the model began a new demonstration, whitespace stripped."""
    cut = text.find(QUERY_STOP.strip())
    return (text if cut < 0 else text[:cut]).strip()
