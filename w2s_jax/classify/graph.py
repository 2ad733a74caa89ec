"""A classification experiment as one graph of stages (nothing runs; every key is known up front).

Per seed ``s``: ``items/s``; per weak model ``w``: ``weak-model/w/s`` (fine-tuned on half A's gold
labels), its labels of half B ``weak-labels/w/s`` and its test probabilities; per strong model
``S``: the ceiling ``ceiling/S/s`` (fine-tuned on half B's gold labels), ``zero-shot/S/s`` and,
with repairs, ``features/S/s``; per (weak, strong) pair: a student per loss on the weak soft
labels, per repair a probe and a student on its labels, and with ``icl.demos`` the in-context
refinement and a student on it. The students of repaired and refined labels use the first loss.
A stage shared by two pairs (the weak model, the features) has one key and runs once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from w2s_jax.classify.config import ClassificationConfig
from w2s_jax.classify.stages_data import Items, Source
from w2s_jax.classify.stages_models import FitClassifier, Probabilities
from w2s_jax.classify.stages_strong import Features, ICLRefine, ProbeLabels, ZeroShot
from w2s_jax.pipeline import Stage, graph_order
from w2s_jax.pipeline.refs import Model


@dataclasses.dataclass(frozen=True)
class Subject:
    """A row of the report: a model's test probabilities in one seed."""

    name: str  # "weak", "ceiling", "zero-shot", "student/<loss>", "probe/<repair>", ...
    role: str  # "weak", "ceiling", "zero-shot", "student" or "probe"
    seed: int
    weak: str | None  # the weak model's short name (its supervisor), when there is one
    strong: str | None  # the strong model's short name
    stage: Stage  # has test_probs(store)


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """A set of half-B training labels, scored against half B's gold labels in the report."""

    name: str  # "weak", "repair/<name>", "icl-refine"
    seed: int
    weak: str
    strong: str | None
    stage: Stage  # has soft_labels(store)


def short_name(model: str) -> str:
    """``Qwen/Qwen2.5-0.5B`` -> ``qwen2.5-0.5b`` (a directory's or hub name's last part)."""
    return Path(model.rstrip("/")).name.lower() or model


@dataclasses.dataclass
class ClassificationGraph:
    """The stages, the report's subjects and the label sets."""

    stages: list
    subjects: list
    label_sets: list
    items: dict  # seed -> Items


def classification_graph(config: ClassificationConfig) -> ClassificationGraph:
    """The experiment's stages in run order, its subjects and label sets (see the module docstring)."""
    d, m = config.data, config.models
    fmt = d.format
    weak_names = [short_name(w) for w in m.weak]
    strong_names = [short_name(s) for s in m.strong]
    for names, what in ((weak_names, "weak"), (strong_names, "strong")):
        if len(set(names)) != len(names):
            raise ValueError(f"{config.source}: two models.{what} models share the short name "
                             f"{next(n for n in names if names.count(n) > 1)!r}")
    stages, subjects, label_sets, all_items = [], [], [], {}
    for seed in config.seeds:
        tag = f"seed-{seed}"
        items = Items(name=f"items/{tag}", format=fmt, train=Source(d.train, d.train_split, d.hub_config),
                      test=Source(d.test, d.test_split, d.hub_config), max_rows=d.max_rows, n_train=d.n_train,
                      n_test=d.n_test, weak_fraction=d.weak_fraction, seed=seed)
        all_items[seed] = items
        train = dataclasses.replace(config.train, seed=seed)
        common = dict(items=items)

        def fit(name, base, part, labels=None, loss=None, role="student", train=train):
            stage = FitClassifier(name=f"{name}/{tag}", base=Model(base), part=part, labels=labels, loss=loss,
                                  train=train, role=role, **common)
            test = Probabilities(name=f"probs/{name}/{tag}", classifier=stage, part="test",
                                 batch_size=m.batch_size)
            stages.extend([stage, test])
            return stage, test

        weak_b = {}
        for w, (model, wn) in enumerate(zip(m.weak, weak_names)):
            weak, test = fit(f"weak-model/{wn}", model, "a", role="weak",
                             train=dataclasses.replace(config.weak_train, seed=seed))
            weak_b[w] = Probabilities(name=f"weak-labels/{wn}/{tag}", classifier=weak, part="b",
                                      batch_size=m.batch_size)
            stages.append(weak_b[w])
            subjects.append(Subject("weak", "weak", seed, wn, None, test))
            label_sets.append(LabelSet("weak", seed, wn, None, weak_b[w]))
        features = {}
        for s, (model, sn) in enumerate(zip(m.strong, strong_names)):
            _, test = fit(f"ceiling/{sn}", model, "b", role="ceiling")
            subjects.append(Subject("ceiling", "ceiling", seed, None, sn, test))
            zero = ZeroShot(name=f"zero-shot/{sn}/{tag}", base=Model(model), items=items, format=fmt, dtype=m.dtype,
                            batch_size=m.batch_size)
            stages.append(zero)
            subjects.append(Subject("zero-shot", "zero-shot", seed, None, sn, zero))
            if config.repair:
                features[s] = Features(name=f"features/{sn}/{tag}", base=Model(model), items=items,
                                       max_len=config.train.max_len, dtype=m.dtype, batch_size=m.batch_size)
                stages.append(features[s])
        for w, s in m.pairs():
            wn, sn, strong = weak_names[w], strong_names[s], m.strong[s]
            pair = f"{wn}/{sn}"
            for loss in config.losses:
                _, test = fit(f"student/{loss.name}/{pair}", strong, "b", weak_b[w], loss)
                subjects.append(Subject(f"student/{loss.name}", "student", seed, wn, sn, test))
            first = config.losses[0]
            for repair in config.repair:
                probe = ProbeLabels(name=f"repair/{repair.name}/{pair}/{tag}", features=features[s],
                                    weak=weak_b[w], repair=repair)
                stages.append(probe)
                subjects.append(Subject(f"probe/{repair.name}", "probe", seed, wn, sn, probe))
                label_sets.append(LabelSet(f"repair/{repair.name}", seed, wn, sn, probe))
                _, test = fit(f"student/repair-{repair.name}/{pair}", strong, "b", probe, first)
                subjects.append(Subject(f"student/repair-{repair.name}", "student", seed, wn, sn, test))
            if config.icl.demos:
                refine = ICLRefine(name=f"icl-refine/{pair}/{tag}", base=Model(strong), items=items,
                                   weak=weak_b[w], format=fmt, demos=config.icl.demos, dtype=m.dtype,
                                   batch_size=m.batch_size)
                stages.append(refine)
                label_sets.append(LabelSet("icl-refine", seed, wn, sn, refine))
                _, test = fit(f"student/icl-refine/{pair}", strong, "b", refine, first)
                subjects.append(Subject("student/icl-refine", "student", seed, wn, sn, test))
    return ClassificationGraph(graph_order(stages), subjects, label_sets, all_items)
