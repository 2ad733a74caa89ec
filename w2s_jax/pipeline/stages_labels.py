"""The labelling stages: the weak supervisor's answers, then each method's training labels."""

from __future__ import annotations

import dataclasses
from typing import Any

from w2s_jax.methods.base import MethodContext
from w2s_jax.pipeline.refs import Inference, Model, Split, Supervisor
from w2s_jax.pipeline.stage import ChunkedStage, Resources


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class WeakLabels(ChunkedStage):
    """The weak supervisor answers every training question (with the task's weak prompt).

    A supervisor given as a label file is read instead; every training row needs a label.
    Records: ``{"index", "answer"}``.
    """

    supervisor: Supervisor
    task: Any
    train: Split
    inference: Inference

    @property
    def slug(self) -> str:
        return "weak-labels"

    def models(self) -> list[str]:
        return [self.supervisor.model.path] if self.supervisor.model else []

    def units(self, res: Resources) -> list:
        return list(range(len(self.train.examples)))

    def process(self, res: Resources, units: list) -> list[list[dict]]:
        examples = [self.train.examples[p] for p in units]
        if self.supervisor.label_file:
            labels = label_file_answers(self.supervisor.label_file.path, "train", self.train.examples)
            return [[{"index": e.index, "answer": labels[e.index]}] for e in examples]
        task, inference = self.task, self.inference
        engine = res.pool.engine(self.supervisor.model.path, chat=inference.chat, dtype=inference.dtype)
        answers = task.answer(engine, [task.weak_prompt(e) for e in examples], examples,
                              inference.generation, key=self.prng())
        return [[{"index": e.index, "answer": a.strip()}] for e, a in zip(examples, answers)]

    def summarize(self, records):
        return f"{len(records)} weak answers"


def label_file_answers(path: str, split: str, examples) -> dict[int, str]:
    """``{index: answer}`` of one split of a weak-label file; every one of ``examples`` needs one."""
    from w2s_jax.tasks.data import load_rows

    answers = {}
    for number, row in enumerate(load_rows(path)):
        for field in ("split", "index", "answer"):
            if field not in row or row[field] is None:
                raise ValueError(f"{path}: row {number} has no {field!r} field")
        if row["split"] == split:
            answers[int(row["index"])] = str(row["answer"])
    missing = [e.index for e in examples if e.index not in answers]
    if missing:
        raise ValueError(f"{path}: no {split} label for row(s) {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''}")
    return answers


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Labels(ChunkedStage):
    """One method's training labels for one weak supervisor (``weak=None`` for methods without
    one). ``upstream``: the label stages of the methods this one ``needs``, by method name;
    ``strong`` and ``intermediate``: the models of the roles the method uses.

    Records: the method's label rows ``{"index", "completion", ...}``.
    """

    method: Any
    weak: WeakLabels | None
    upstream: tuple[tuple[str, "Labels"], ...] = ()
    strong: Model | None = None
    intermediate: tuple[Model, ...] = ()
    task: Any
    train: Split
    inference: Inference

    @property
    def slug(self) -> str:
        return f"labels.{self.method.name}"

    def fields(self) -> dict:
        """The hashed fields, and the method's ``draws`` version when it samples and is past 1."""
        fields = super().fields()
        if self.inference.generation.temperature > 0 and self.method.draws > 1:
            fields["draws"] = self.method.draws
        return fields

    def models(self) -> list[str]:
        return ([self.strong.path] if self.strong else []) + [m.path for m in self.intermediate]

    def context(self, res: Resources) -> MethodContext:
        """The method's view of its inputs (built once per stage and process)."""
        slot = f"context:{self.key}"
        if slot not in res.memo:
            examples = self.train.examples
            weak = [""] * len(examples)
            if self.weak is not None:
                answers = {r["index"]: r["answer"] for r in self.weak.records(res.store)}
                weak = [answers[e.index] for e in examples]
            upstream = {name: {r["index"]: r for r in stage.records(res.store)} for name, stage in self.upstream}
            inference = self.inference

            def engine(role: str):
                if role == "strong" and self.strong is not None:
                    return res.pool.engine(self.strong.path, chat=inference.chat, dtype=inference.dtype)
                if role.startswith("intermediate:"):
                    model = self.intermediate[int(role.split(":", 1)[1])]
                    return res.pool.engine(model.path, chat=inference.chat, dtype=inference.dtype)
                raise KeyError(f"unknown model role {role!r}")

            res.memo[slot] = MethodContext(task=self.task, examples=examples, weak=weak, upstream=upstream,
                                           engine=engine, generation=inference.generation, key=self.prng(),
                                           num_intermediate=len(self.intermediate),
                                           upstream_options={name: stage.method.options
                                                             for name, stage in self.upstream})
        return res.memo[slot]

    def units(self, res: Resources) -> list:
        return [list(unit) for unit in self.method.units(self.context(res))]

    def process(self, res: Resources, units: list) -> list[list[dict]]:
        ctx = self.context(res)
        rows = self.method.label(ctx, [tuple(u) for u in units])
        unit_of = {ctx.examples[p].index: i for i, unit in enumerate(units) for p in unit}
        per_unit: list[list[dict]] = [[] for _ in units]
        for row in rows:
            if row.get("index") not in unit_of:
                raise ValueError(f"method {self.method.name!r} returned a row for index "
                                 f"{row.get('index')!r}, which is not in the units it was given")
            per_unit[unit_of[row["index"]]].append(row)
        return per_unit

    def summarize(self, records):
        return f"{len(records)} training labels"
