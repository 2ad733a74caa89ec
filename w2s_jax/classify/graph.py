"""A classification experiment as one graph of stages (nothing runs; every key is known up front).

Per seed ``s``: ``items/s``; per weak model ``w``: ``weak-model/w/s`` (fine-tuned on half A's gold
labels), its labels of half B ``weak-labels/w/s`` and its test probabilities; per strong model
``S``: the ceiling ``ceiling/S/s`` (fine-tuned on half B's gold labels), ``zero-shot/S/s`` and,
with repairs, ``features/S/s``; per (weak, strong) pair: a student per loss on the weak soft
labels, per repair a probe and a student on its labels, with ``icl.demos`` the in-context
refinement and a student on it, and per strong-to-strong round two classifiers on either half of
B's current labels, each labelling the other half, and a student on the joined labels. The
students of repaired, refined and strong-to-strong labels use the first loss.
A stage shared by two pairs (the weak model, the features) has one key and runs once.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from w2s_jax.classify.config import ClassificationConfig
from w2s_jax.classify.stages_data import Items, Source
from w2s_jax.classify.stages_models import CrossLabels, FitClassifier, Probabilities
from w2s_jax.classify.stages_strong import Features, ICLRefine, ProbeLabels, ZeroShot
from w2s_jax.pipeline import Stage, graph_order
from w2s_jax.pipeline.refs import Model


@dataclasses.dataclass(frozen=True)
class ScoredModel:
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


def classification_graph(config: ClassificationConfig, store=None) -> ClassificationGraph:
    """The experiment's stages in run order, its subjects and label sets (see the module docstring).
    ``store``: needed when stages make the data and models (``[concept_world]``), to name their files."""
    d, m = config.data, config.models
    models, made = {name: Model(name) for name in (*m.weak, *m.strong)}, []
    if config.concept_world is not None:
        from w2s_jax.classify.concept import pretrain_stages

        if store is None:
            raise ValueError("a concept-world classification graph needs the store (its models are made there)")
        pretrained, made = pretrain_stages(config.concept_world)
        models = {name: Model(str(stage.model_dir(store)), made_by=stage.key) for name, stage in pretrained.items()}
    fmt = d.format
    weak_names = [short_name(w) for w in m.weak]
    strong_names = [short_name(s) for s in m.strong]
    for names, what in ((weak_names, "weak"), (strong_names, "strong")):
        if len(set(names)) != len(names):
            raise ValueError(f"{config.source}: two models.{what} models share the short name "
                             f"{next(n for n in names if names.count(n) > 1)!r}")
    stages, subjects, label_sets, all_items = [*made], [], [], {}
    for seed in config.seeds:
        tag = f"seed-{seed}"
        sources, data = (Source(d.train, d.train_split, d.hub_config), Source(d.test, d.test_split, d.hub_config)), None
        if config.concept_world is not None:
            from w2s_jax.classify.concept import ConceptItems

            cw = config.concept_world
            data = ConceptItems(name=f"concept-items/{tag}", world=cw.world, n_test_inputs=cw.n_test_inputs, seed=seed,
                                items_per_input=cw.items_per_input, readout=cw.readout)
            sources = (data.source(store, "train"), data.source(store, "test"))
        items = Items(name=f"items/{tag}", format=fmt, train=sources[0], test=sources[1], max_rows=d.max_rows,
                      n_train=d.n_train, n_test=d.n_test, weak_fraction=d.weak_fraction, seed=seed, data=data)
        all_items[seed] = items
        train = dataclasses.replace(config.train, seed=seed)

        def fit(name, base, part, labels=None, loss=None, role="student", train=train):
            stage = FitClassifier(name=f"{name}/{tag}", base=models[base], part=part, labels=labels, loss=loss,
                                  train=train, role=role, items=items)
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
            subjects.append(ScoredModel("weak", "weak", seed, wn, None, test))
            label_sets.append(LabelSet("weak", seed, wn, None, weak_b[w]))
        features = {}
        for s, (model, sn) in enumerate(zip(m.strong, strong_names)):
            _, test = fit(f"ceiling/{sn}", model, "b", role="ceiling")
            subjects.append(ScoredModel("ceiling", "ceiling", seed, None, sn, test))
            if m.zero_shot:
                zero = ZeroShot(name=f"zero-shot/{sn}/{tag}", base=models[model], items=items, format=fmt,
                                dtype=m.dtype, batch_size=m.batch_size)
                stages.append(zero)
                subjects.append(ScoredModel("zero-shot", "zero-shot", seed, None, sn, zero))
            if config.repair:
                features[s] = Features(name=f"features/{sn}/{tag}", base=models[model], items=items,
                                       max_len=config.train.max_len, dtype=m.dtype, batch_size=m.batch_size)
                stages.append(features[s])
        for w, s in m.pairs():
            wn, sn, strong = weak_names[w], strong_names[s], m.strong[s]
            pair = f"{wn}/{sn}"
            for loss in config.losses:
                _, test = fit(f"student/{loss.name}/{pair}", strong, "b", weak_b[w], loss)
                subjects.append(ScoredModel(f"student/{loss.name}", "student", seed, wn, sn, test))
            first = config.losses[0]
            for repair in config.repair:
                probe = ProbeLabels(name=f"repair/{repair.name}/{pair}/{tag}", features=features[s],
                                    weak=weak_b[w], repair=repair)
                stages.append(probe)
                subjects.append(ScoredModel(f"probe/{repair.name}", "probe", seed, wn, sn, probe))
                label_sets.append(LabelSet(f"repair/{repair.name}", seed, wn, sn, probe))
                _, test = fit(f"student/repair-{repair.name}/{pair}", strong, "b", probe, first)
                subjects.append(ScoredModel(f"student/repair-{repair.name}", "student", seed, wn, sn, test))
            if config.icl.demos and config.concept_world is not None:
                from w2s_jax.classify.concept_refine import ConceptRefine

                refine = ConceptRefine(name=f"icl-refine/{pair}/{tag}", base=models[strong], items=items,
                                       weak=weak_b[w], world=config.concept_world.world, demos=config.icl.demos,
                                       batch_size=m.batch_size)
            elif config.icl.demos:
                refine = ICLRefine(name=f"icl-refine/{pair}/{tag}", base=models[strong], items=items,
                                   weak=weak_b[w], format=fmt, demos=config.icl.demos, dtype=m.dtype,
                                   batch_size=m.batch_size)
            if config.icl.demos:
                stages.append(refine)
                label_sets.append(LabelSet("icl-refine", seed, wn, sn, refine))
                _, test = fit(f"student/icl-refine/{pair}", strong, "b", refine, first)
                subjects.append(ScoredModel("student/icl-refine", "student", seed, wn, sn, test))
            labels = weak_b[w]
            for r in range(1, config.strong_to_strong.rounds + 1):
                halves = []
                for h in (0, 1):  # trained on the other half, labels half h
                    half = FitClassifier(name=f"s2s-{r}/half-{h}/{pair}/{tag}", base=models[strong], items=items,
                                         part="b", holdout=h, labels=labels, loss=first, train=train, role="s2s")
                    halves.append(Probabilities(name=f"s2s-{r}/labels-{h}/{pair}/{tag}", classifier=half, part="b",
                                                holdout=h, batch_size=m.batch_size))
                    stages.extend([half, halves[-1]])
                labels = CrossLabels(name=f"s2s-{r}/labels/{pair}/{tag}", halves=tuple(halves))
                stages.append(labels)
                label_sets.append(LabelSet(f"s2s-{r}", seed, wn, sn, labels))
                _, test = fit(f"student/s2s-{r}/{pair}", strong, "b", labels, first)
                subjects.append(ScoredModel(f"student/s2s-{r}", "student", seed, wn, sn, test))
    return ClassificationGraph(graph_order(stages), subjects, label_sets, all_items)
