"""From an experiment to its stages: validation up front, then the stage graph in run order.

Per weak supervisor ``s``: ``weak-labels/s``, the supervisor's own test predictions and scores
(``predict/weak/s``, ``score/weak/s``), and for every method that reads weak labels
``labels/m/s -> finetune/m/s -> predict/student/m/s -> score/student/m/s``. Methods without a
weak supervisor (``gold``) run once; ``zero-shot`` is ``predict/zero-shot -> score/zero-shot``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from w2s_jax.pipeline.config import ExperimentConfig, ExperimentError
from w2s_jax.pipeline.refs import Model, Split, Supervisor
from w2s_jax.pipeline.run import inference_of, supervisors
from w2s_jax.pipeline.stage import Stage
from w2s_jax.pipeline.stages_labels import Labels, WeakLabels, label_file_answers
from w2s_jax.pipeline.stages_student import (
    Finetune,
    Predict,
    Score,
    StudentAnswerer,
    WeakAnswerer,
    ZeroShotAnswerer,
)
from w2s_jax.tasks.base import DataError, Example

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclasses.dataclass(frozen=True)
class Subject:
    """A row of the report: who was scored, and how it relates to the weak supervisors."""

    name: str  # "weak/w0-x", "zero-shot", "student/naive/w0-x", "student/gold"
    role: str  # "weak", "zero-shot", "method" or "ceiling"
    method: str | None  # the method's name for students
    supervisor: str | None  # the weak supervisor's name, when there is one
    score_stage: Score


def check_model(config: ExperimentConfig, name: str, what: str) -> None:
    """A model must be a checkpoint directory with config.json, or a hub name."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ExperimentError(f"{config.source}: {what} {name!r}: no config.json in this directory")
    elif name.startswith((".", "/", "~")) or not _HUB_NAME.match(name):
        raise ExperimentError(f"{config.source}: {what} {name!r}: no such directory (and not a hub name)")


def load_split(config: ExperimentConfig, which: str) -> list[Example]:
    """The validated examples of the train or test split (errors name file, row and field)."""
    from w2s_jax.tasks.data import load_rows

    data = config.data
    source = data.train if which == "train" else data.test
    split = data.train_split if which == "train" else data.test_split
    limit = (data.n_train if which == "train" else data.n_test) or None
    try:
        rows = load_rows(source, split=split, hub_config=data.hub_config, limit=limit)
    except (OSError, ValueError) as error:
        raise ExperimentError(f"{config.source}: data.{which}: {error}") from None
    if not rows:
        raise ExperimentError(f"{config.source}: data.{which} {source!r} has no rows")
    try:
        return [config.task.example(row, index, source) for index, row in enumerate(rows)]
    except DataError as error:
        raise ExperimentError(str(error)) from None


def validate(config: ExperimentConfig) -> tuple[list[Example], list[Example]]:
    """Everything checkable before expensive work; returns the (train, test) examples."""
    models = config.models
    check_model(config, models.strong, "models.strong")
    for i, name in enumerate(models.weak):
        check_model(config, name, f"models.weak[{i}]")
    for i, name in enumerate(models.intermediate):
        check_model(config, name, f"models.intermediate[{i}]")
    for i, name in enumerate(models.weak_label_files):
        if not Path(name).is_file():
            raise ExperimentError(f"{config.source}: models.weak_label_files[{i}] {name!r}: file not found")
    if config.task.needs_judge:
        if not models.judge:
            raise ExperimentError(f"{config.source}: task {config.task.name!r} is scored by a judge: "
                                  "set models.judge")
        check_model(config, models.judge, "models.judge")
    for method in config.methods:
        if "intermediate" in method.roles and not models.intermediate:
            raise ExperimentError(f"{config.source}: method {method.name!r} needs models.intermediate "
                                  "(the chain of models between weak and strong)")
    train, test = load_split(config, "train"), load_split(config, "test")
    if config.data.n_eval >= len(train):
        raise ExperimentError(f"{config.source}: data.n_eval = {config.data.n_eval} holds out every one of the "
                              f"{len(train)} training rows; nothing would be left to fine-tune on")
    for i, name in enumerate(models.weak_label_files):
        for split, examples in (("train", train), ("test", test)):
            try:
                label_file_answers(name, split, examples)
            except (OSError, ValueError) as error:
                raise ExperimentError(f"{config.source}: models.weak_label_files[{i}]: {error}") from None
    if any(m.needs_gold for m in config.methods):
        missing = [e.index for e in train if e.answer is None]
        if missing:
            raise ExperimentError(f"{config.source}: method 'gold' needs gold answers; training rows "
                                  f"{missing[:5]} of {config.data.train} have none")
    seen = {e.question.strip(): e.index for e in train}
    overlap = [(e.index, seen[e.question.strip()]) for e in test if e.question.strip() in seen]
    if overlap:
        t, r = overlap[0]
        raise ExperimentError(f"{config.source}: the test split overlaps training: test row {t} of "
                              f"{config.data.test} is training row {r} of {config.data.train} "
                              f"({len(overlap)} overlapping row(s) in all)")
    return train, test


def build_plan(config: ExperimentConfig, train: Split, test: Split, *,
               made_by: Mapping[str, str] | None = None) -> tuple[list[Stage], list[Subject]]:
    """The stages in run order, and the report's subjects.

    ``made_by`` maps the paths of models and label files that other stages write to those stages'
    keys (their identities, known before the files exist); every other model is identified by its
    files' fingerprint when the keys are computed.
    """
    stages: list[Stage] = []
    subjects: list[Subject] = []
    made_by = dict(made_by or {})

    def model(path: str) -> Model:
        return Model(path, made_by=made_by.get(path))

    m, task, inference = config.models, config.task, inference_of(config)
    strong = model(m.strong)
    judge = model(m.judge) if task.needs_judge else None

    def scored(answerer, name, role, method=None, supervisor=None):
        predict = Predict(name=f"predict/{name}", answerer=answerer, task=task, test=test, inference=inference)
        score = Score(name=f"score/{name}", predict=predict, task=task, test=test, judge=judge,
                      judge_options=config.judge if judge else None, inference=inference if judge else None)
        stages.extend([predict, score])
        subjects.append(Subject(name, role, method, supervisor, score))

    sups: list[Supervisor] = supervisors(config, made_by)
    weak_stages = {s.name: WeakLabels(name=f"weak-labels/{s.name}", supervisor=s, task=task, train=train,
                                      inference=inference) for s in sups}
    for s in sups:
        stages.append(weak_stages[s.name])
        scored(WeakAnswerer(s), f"weak/{s.name}", "weak", supervisor=s.name)
    labels: dict[tuple[str, str | None], Labels] = {}
    for method in _dependency_order(config.methods):
        if not method.trains:
            scored(ZeroShotAnswerer(strong), "zero-shot", "zero-shot", method=method.name)
            continue
        for s in (sups if method.uses_weak else [None]):
            sup = s.name if s else None
            suffix = f"/{sup}" if sup else ""
            stage = Labels(name=f"labels/{method.name}{suffix}", method=method,
                           weak=weak_stages[sup] if s else None,
                           upstream=tuple((need, labels[(need, sup)]) for need in method.needs),
                           strong=strong if "strong" in method.roles else None,
                           intermediate=tuple(model(i) for i in m.intermediate) if "intermediate" in method.roles else (),
                           task=task, train=train, inference=inference)
            labels[(method.name, sup)] = stage
            finetune = Finetune(name=f"finetune/{method.name}{suffix}", labels=stage, strong=strong,
                                train_config=config.train, chat=m.chat, task=task, train=train,
                                n_eval=config.data.n_eval)
            stages.extend([stage, finetune])
            role = "ceiling" if method.needs_gold else "method"
            scored(StudentAnswerer(finetune), f"student/{method.name}{suffix}", role, method=method.name,
                   supervisor=sup)
    return stages, subjects


def _dependency_order(methods) -> list:
    """Methods with every method they need placed before them (else in the file's order)."""
    by_name, ordered, seen = {m.name: m for m in methods}, [], set()

    def visit(method, path=()):
        if method.name in seen:
            return
        if method.name in path:
            raise ExperimentError(f"methods need each other in a cycle: {' -> '.join(path + (method.name,))}")
        for need in method.needs:
            visit(by_name[need], path + (method.name,))
        seen.add(method.name)
        ordered.append(method)

    for method in methods:
        visit(method)
    return ordered
