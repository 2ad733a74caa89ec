"""Binary classification tasks: how each dataset's rows become items ``{"text", "label"}``.

Each dataset has a stored configuration (a frozen :class:`Format`): its Hub name and splits, the
fields it reads and how a row becomes one item, so that a run of ``sciq`` reproduces whatever
machine it is on. Tasks that turn a multiple-choice row into a yes/no item (SciQ, CosmosQA) or
pick one of a preference pair (Anthropic HH) draw that choice from the row's own generator,
``numpy.random.default_rng([seed, split, row])``: the same seed gives the same items, whatever
else the file holds. The formats follow Burns et al. (2023), section A.1 and their released code:

=================  ==================================================  ======================
name               item text                                           label 1 when
=================  ==================================================  ======================
sciq               ``Q: <question> A: <correct or a distractor>``       the answer is correct
boolq              ``Passage: <passage>\\nQuestion: <question>``        the answer is yes
cosmos-qa          context, question and a right or wrong answer       the answer is correct
anthropic-hh       the chosen or the rejected conversation             it is the chosen one
amazon-polarity    ``<title> <content>``                               the review is positive
text-label         a user file's text field                           its label field is 1
=================  ==================================================  ======================

Then :func:`balance` downsamples the majority class by a seeded draw, so chance is 50%.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from w2s_jax.registry import Registry

FORMATS: Registry = Registry("dataset", modules=("w2s_jax.classify.datasets",))
SPLIT_SALT = {"train": 0, "test": 1}  # a row's generator differs between the two splits


class FormatError(ValueError):
    """A row that cannot become an item; the message names the source, the row and the field."""


def need(row: dict, name: str, index: int, source: str, kind: type | tuple = str):
    """``row[name]``, which must be present, not None and of ``kind`` (else a FormatError)."""
    if name not in row or row[name] is None:
        raise FormatError(f"{source}: row {index} has no {name!r} field (fields: {', '.join(sorted(row))})")
    value, kinds = row[name], kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool) and not {bool, object} & set(kinds):
        raise FormatError(f"{source}: row {index} field {name!r} must be {getattr(kind, '__name__', kind)}, "
                          f"got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Format:
    """A dataset's stored configuration (see the module docstring)."""

    name: ClassVar[str]
    hub: ClassVar[str | None] = None  # the Hub dataset name
    hub_config: ClassVar[str | None] = None
    train_split: ClassVar[str] = "train"  # Hub split names
    test_split: ClassVar[str] = "test"
    # the question put after an item when the strong model answers it zero-shot or in context
    question: str = "Is this true?"
    answers: tuple[str, str] = (" No", " Yes")  # the answer texts of class 0 and class 1

    def __post_init__(self):
        if len(self.answers) != 2 or len(set(self.answers)) != 2 or not all(isinstance(a, str) and a.strip()
                                                                             for a in self.answers):
            raise ValueError(f"task.answers must be two different texts (class 0, class 1), got {self.answers!r}")
        object.__setattr__(self, "answers", tuple(self.answers))

    def prompt(self, text: str) -> str:
        """The zero-shot prompt of an item's text (its answer is the next token)."""
        return f"{text}\n{self.question} Answer:"

    def demonstration(self, text: str, label: int) -> str:
        """An in-context demonstration: the prompt and its answer."""
        return f"{self.prompt(text)}{self.answers[label]}\n\n"

    def item(self, row: dict, index: int, source: str, rng: np.random.Generator) -> dict:
        """``{"text", "label"}`` of one row (label 0 or 1)."""
        raise NotImplementedError


@FORMATS.register
@dataclasses.dataclass(frozen=True, kw_only=True)
class SciQ(Format):
    """SciQ: a question with its correct answer or one of its three distractors, drawn 50/50."""

    name = "sciq"
    hub, train_split, test_split = "allenai/sciq", "train", "test"
    question: str = "Is the answer correct?"

    def item(self, row, index, source, rng):
        question = need(row, "question", index, source)
        label = int(rng.random() < 0.5)
        if label:
            answer = need(row, "correct_answer", index, source)
        else:
            answer = need(row, f"distractor{rng.integers(1, 4)}", index, source)
        return {"text": f"Q: {question} A: {answer}", "label": label}


@FORMATS.register
@dataclasses.dataclass(frozen=True, kw_only=True)
class BoolQ(Format):
    """BoolQ: a passage and a yes/no question about it; label 1 when the answer is yes."""

    name = "boolq"
    hub, train_split, test_split = "google/boolq", "train", "validation"
    question: str = "Is the answer to the question yes?"

    def item(self, row, index, source, rng):
        passage, question = need(row, "passage", index, source), need(row, "question", index, source)
        field = "answer" if "answer" in row else "label"  # google/boolq or super_glue
        return {"text": f"Passage: {passage}\nQuestion: {question}",
                "label": int(need(row, field, index, source, (bool, int)))}


@FORMATS.register
@dataclasses.dataclass(frozen=True, kw_only=True)
class CosmosQA(Format):
    """CosmosQA: context, question and either the right answer or another of the four, 50/50
    (an item whose right answer is "None of the above choices" is always a wrong pairing)."""

    name = "cosmos-qa"
    hub, train_split, test_split = "allenai/cosmos_qa", "train", "validation"
    question: str = "Is the answer correct?"

    def item(self, row, index, source, rng):
        context, question = need(row, "context", index, source), need(row, "question", index, source)
        right = int(need(row, "label", index, source, int))
        answers = [need(row, f"answer{i}", index, source) for i in range(4)]
        if not 0 <= right < 4:
            raise FormatError(f"{source}: row {index} field 'label' must be 0..3, got {right}")
        label = 0 if answers[right].startswith("None of the above choices") else int(rng.random() < 0.5)
        others = [a for i, a in enumerate(answers) if i != right and a != answers[right]]
        answer = answers[right] if label else others[int(rng.integers(len(others)))]
        return {"text": f"Context: {context}\nQuestion: {question}\nAnswer: {answer}", "label": label}


@FORMATS.register
@dataclasses.dataclass(frozen=True, kw_only=True)
class AnthropicHH(Format):
    """Anthropic HH: the chosen (label 1) or the rejected (label 0) conversation, 50/50."""

    name = "anthropic-hh"
    hub, train_split, test_split = "Anthropic/hh-rlhf", "train", "test"
    question: str = "Is the assistant's last reply the better one?"

    def item(self, row, index, source, rng):
        label = int(rng.random() < 0.5)
        return {"text": need(row, "chosen" if label else "rejected", index, source).strip(), "label": label}


@FORMATS.register
@dataclasses.dataclass(frozen=True, kw_only=True)
class AmazonPolarity(Format):
    """Amazon polarity: a review's title and content; label 1 when it is positive."""

    name = "amazon-polarity"
    hub, train_split, test_split = "fancyzhx/amazon_polarity", "train", "test"
    question: str = "Is this review positive?"

    def item(self, row, index, source, rng):
        title, content = need(row, "title", index, source), need(row, "content", index, source)
        return {"text": f"{title} {content}".strip(), "label": hard_label(row, "label", index, source)}


@FORMATS.register
@dataclasses.dataclass(frozen=True, kw_only=True)
class TextLabel(Format):
    """Any file with a text field and a label field: 0/1, true/false, or ``positive`` for class 1
    (every other value is class 0)."""

    name = "text-label"
    text_field: str = "text"
    label_field: str = "label"
    positive: str | int | None = None  # the label value of class 1 (None: the label is 0/1 or a bool)

    def item(self, row, index, source, rng):
        text = need(row, self.text_field, index, source)
        if self.positive is not None:
            if self.label_field not in row or row[self.label_field] is None:
                need(row, self.label_field, index, source, object)
            return {"text": text, "label": int(row[self.label_field] == self.positive)}
        return {"text": text, "label": hard_label(row, self.label_field, index, source)}


def hard_label(row: dict, field: str, index: int, source: str) -> int:
    """A 0/1 label from 0, 1, true, false, "0", "1" (else a FormatError naming the row)."""
    value = need(row, field, index, source, object)
    if isinstance(value, str) and value.strip().lower() in ("0", "1", "true", "false"):
        value = value.strip().lower() in ("1", "true")
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return int(value)
    raise FormatError(f"{source}: row {index} field {field!r} must be 0 or 1 (or true/false), got {value!r}; "
                      "set task.positive to name the value of class 1")


def dataset_format(name: str, options: dict | None = None) -> Format:
    """The stored configuration ``name`` with ``options`` (its fields: ``text-label``'s fields)."""
    cls = FORMATS.get(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options or {}) - fields)
    if unknown:
        raise ValueError(f"dataset {name!r} has no option {unknown[0]!r}"
                         + (f"; options: {', '.join(sorted(fields))}" if fields else "; it takes none"))
    return cls(**(options or {}))


def to_items(fmt: Format, rows: Sequence[dict], *, seed: int, split: str, source: str) -> list[dict]:
    """Every row as an item ``{"row", "text", "label"}`` (``row``: its position in the source)."""
    items = []
    for index, row in enumerate(rows):
        rng = np.random.default_rng([seed, SPLIT_SALT[split], index])
        item = fmt.item(row, index, source, rng)
        if not item["text"].strip():
            raise FormatError(f"{source}: row {index} gives an empty text")
        items.append({"row": index, **item})
    return items


def balance(items: Sequence[dict], *, seed: int) -> list[dict]:
    """``items`` with the majority class downsampled to the minority's size by a seeded draw
    (kept in their order). A split with one class only is a ValueError."""
    by_label = {c: [i for i, item in enumerate(items) if item["label"] == c] for c in (0, 1)}
    n = min(len(v) for v in by_label.values())
    if n == 0:
        missing = 0 if not by_label[0] else 1
        raise ValueError(f"no item has label {missing}: a binary task needs both classes")
    rng = np.random.default_rng([seed, 2])
    keep = set(by_label[0]) | set(by_label[1])
    for c in (0, 1):
        if len(by_label[c]) > n:
            keep -= set(rng.choice(by_label[c], size=len(by_label[c]) - n, replace=False).tolist())
    return [items[i] for i in sorted(keep)]
