"""In-context demonstrations: the prompt format shared by the refinement methods.

A demonstration is ``Question: {q}\\nAnswer: {a}``, demonstrations are joined by blank lines, and
the query is ``Question: {q}\\nAnswer:``. The demonstrations travel as the prompt's system message
and the query as its user message: with a chat template that is the chat form, and without one
:class:`~w2s_jax.inference.Prompt` renders them as ``demonstrations + "\\n\\n" + query``, the plain
few-shot form.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from w2s_jax.inference.engine import Prompt

QUERY_STOP = "\n\nQuestion:"  # a base model that starts the next demonstration has finished


def demonstration(question: str, answer: str) -> str:
    """``Question: {q}\\nAnswer: {a}``."""
    return f"Question: {question}\nAnswer: {answer.strip()}"


def query(question: str) -> str:
    """``Question: {q}\\nAnswer:``."""
    return f"Question: {question}\nAnswer:"


def in_context_prompt(demos: Sequence[tuple[str, str]], question: str) -> Prompt:
    """The query after its demonstrations ((question, answer) pairs, in order)."""
    system = "\n\n".join(demonstration(q, a) for q, a in demos) or None
    return Prompt(user=query(question), system=system)


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


def with_query_stop(generation):
    """``generation`` (a :class:`~w2s_jax.tasks.Generation`) that also stops at :data:`QUERY_STOP`."""
    if QUERY_STOP in generation.stop:
        return generation
    return dataclasses.replace(generation, stop=generation.stop + (QUERY_STOP,))


def clean_answer(text: str) -> str:
    """A generated answer cut where the model began a new demonstration, whitespace stripped."""
    cut = text.find(QUERY_STOP.strip())
    return (text if cut < 0 else text[:cut]).strip()
