"""The labelling stages: the weak supervisor's answers, then each method's training labels."""

from __future__ import annotations

import hashlib
from pathlib import Path

from w2s_jax.methods.base import Method, MethodContext
from w2s_jax.pipeline.run import RunContext, Supervisor
from w2s_jax.pipeline.stage import ChunkedStage, Stage


class WeakLabels(ChunkedStage):
    """The weak supervisor answers every training question (with the task's weak prompt).

    A supervisor given as a label file is read instead; every training row needs a label.
    Records: ``{"index", "answer"}``.
    """

    def __init__(self, supervisor: Supervisor):
        super().__init__(f"weak-labels/{supervisor.name}")
        self.supervisor = supervisor

    def settings(self, run: RunContext) -> dict:
        s = self.supervisor
        identity = ({"model": run.fingerprint(s.model)} if s.model else
                    {"label_file": hashlib.sha256(Path(s.label_file).read_bytes()).hexdigest()})
        return {"supervisor": identity, **run.task_settings(), **run.inference_settings(),
                "data": run.data_hash}

    def units(self, run: RunContext) -> list:
        return list(range(len(run.train)))

    def process(self, run: RunContext, units: list, key) -> list[list[dict]]:
        examples = [run.train[p] for p in units]
        if self.supervisor.label_file:
            labels = label_file_answers(self.supervisor.label_file, "train", run.train)
            return [[{"index": e.index, "answer": labels[e.index]}] for e in examples]
        task = run.config.task
        engine = run.pool.engine(self.supervisor.model)
        answers = task.answer(engine, [task.weak_prompt(e) for e in examples], examples,
                              run.config.generation, key=key)
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


class Labels(ChunkedStage):
    """One method's training labels for one weak supervisor (``None`` for methods without one).

    Records: the method's label rows ``{"index", "completion", ...}``.
    """

    def __init__(self, method: Method, supervisor: Supervisor | None, weak: Stage | None,
                 upstream: dict[str, Stage]):
        suffix = f"/{supervisor.name}" if supervisor else ""
        inputs = ([weak] if weak else []) + list(upstream.values())
        super().__init__(f"labels/{method.name}{suffix}", inputs)
        self.method, self.supervisor, self.weak, self.upstream = method, supervisor, weak, upstream
        self._ctx: MethodContext | None = None

    def settings(self, run: RunContext) -> dict:
        models = run.config.models
        roles = {}
        if "strong" in self.method.roles:
            roles["strong"] = run.fingerprint(models.strong)
        if "intermediate" in self.method.roles:
            roles["intermediate"] = [run.fingerprint(m) for m in models.intermediate]
        return {"method": self.method.name, "options": self.method.options, "models": roles,
                **run.task_settings(), **run.inference_settings(), "data": run.data_hash}

    def context(self, run: RunContext) -> MethodContext:
        """The method's view of the run (built once)."""
        if self._ctx is None:
            weak = [""] * len(run.train)
            if self.weak is not None:
                answers = {r["index"]: r["answer"] for r in self.weak.records(run)}
                weak = [answers[e.index] for e in run.train]
            upstream = {name: {r["index"]: r for r in stage.records(run)}
                        for name, stage in self.upstream.items()}
            models = run.config.models

            def engine(role: str):
                if role == "strong":
                    return run.pool.engine(models.strong)
                if role.startswith("intermediate:"):
                    return run.pool.engine(models.intermediate[int(role.split(":", 1)[1])])
                raise KeyError(f"unknown model role {role!r}")

            self._ctx = MethodContext(task=run.config.task, examples=run.train, weak=weak,
                                      upstream=upstream, engine=engine,
                                      generation=run.config.generation, key=None,
                                      num_intermediate=len(models.intermediate))
        return self._ctx

    def units(self, run: RunContext) -> list:
        return [list(unit) for unit in self.method.units(self.context(run))]

    def process(self, run: RunContext, units: list, key) -> list[list[dict]]:
        ctx = self.context(run)
        ctx.key = key
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
