"""Two of the three sweeps: refined-label accuracy against demonstrations, and against gamma.

Both measure the strong model's in-context answer to a test question after n demonstrations of
training questions with a weak labeller's answers, through the ``icl-refine`` method's own
:func:`~w2s_jax.methods.icl_refine.refine` (same prompts, same stop rule, same answer cleaning),
next to the exact Bayes-optimal answer to the same demonstrations (:mod:`.bayes`). They skip
fine-tuning: they measure the refined labels, which a student then fits (the pipeline runs measure
students). The third sweep (student accuracy against labeller quality) is a pipeline run.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from w2s_jax.concept_world.bayes import bayes_answer, chernoff_rate, label_law
from w2s_jax.concept_world.labellers import Labeller, deterministic_labels_X, labels_for
from w2s_jax.concept_world.world import World


@dataclasses.dataclass(frozen=True)
class SeedSetup:
    """What a seed draws: the target concept k*, the rival j, the train/test inputs (row order)."""

    seed: int
    target: int
    rival: int
    train_inputs: tuple[int, ...]
    test_inputs: tuple[int, ...]


def seed_setup(world: World, n_train: int, seed: int) -> SeedSetup:
    """The seed's target, rival and split of the inputs (a pure function of world and seed)."""
    rng = np.random.default_rng([world.config.seed, 5, seed])
    target, rival = (int(k) for k in rng.choice(world.num_concepts, size=2, replace=False))
    order = rng.permutation(world.config.num_inputs)
    return SeedSetup(seed, target, rival, tuple(int(x) for x in order[:n_train]),
                     tuple(int(x) for x in order[n_train:]))


def _refine_batch(engine, world: World, setup: SeedSetup, demo_sets: Sequence[Sequence[int]],
                  queries: Sequence[int], labels_X: dict[int, int], generation) -> list[int | None]:
    """The strong model's refined answer (an output index, None if not an output token) to each
    query (a test position) after its demonstration set (train positions), in one engine call."""
    from w2s_jax.methods.base import MethodContext
    from w2s_jax.methods.icl_refine import refine
    from w2s_jax.tasks.base import Example
    from w2s_jax.tasks.concept import Concept, first_word

    train = [Example(index=i, question=world.input_token(x),
                     answer=world.output_token(int(world.tables_KxX[setup.target, x])))
             for i, x in enumerate(setup.train_inputs)]
    # one example per (query, demonstration set): refine keys demonstrations by position
    asked = [Example(index=i, question=world.input_token(setup.test_inputs[q]), answer=None)
             for i, q in enumerate(queries)]
    examples = train + asked
    answers = [world.output_token(labels_X[p]) for p in range(len(train))] + [""] * len(asked)
    ctx = MethodContext(task=Concept(), examples=examples, weak=answers, upstream={},
                        engine=lambda role: engine, generation=generation)
    positions = [len(train) + i for i in range(len(asked))]
    demos = dict(zip(positions, (tuple(d) for d in demo_sets)))
    texts = refine(ctx, "strong", positions, demos.__getitem__, answers)
    return [world.parse_output(first_word(t)) for t in texts]


def _draws(setup: SeedSetup, n: int, repeats: int, salt: int):
    """``repeats`` demonstration sets of n training positions per test question."""
    demo_sets, queries = [], []
    for q in range(len(setup.test_inputs)):
        for r in range(repeats):
            rng = np.random.default_rng([setup.seed, salt, n, q, r])
            demo_sets.append(rng.permutation(len(setup.train_inputs))[:n].tolist())
            queries.append(q)
    return demo_sets, queries


def fitted_rate(ns: Sequence[int], accuracy: Sequence[float]) -> float | None:
    """The exponential rate rho of ``1 - accuracy ~ C exp(-rho n)``: least squares of
    ``log(1 - accuracy)`` on n over the points with n >= 1 and a nonzero error (an error of 0 has
    no logarithm; None with fewer than 2 such points)."""
    points = [(n, math.log(1 - a)) for n, a in zip(ns, accuracy) if n >= 1 and a < 1]
    if len(points) < 2:
        return None
    x, y = np.array(points).T
    return float(-np.polyfit(x, y, 1)[0])


def demos_sweep(engine, world: World, setup: SeedSetup, *, demos: Sequence[int], eta: float,
                repeats: int, generation) -> dict:
    """Refined-label accuracy against the number of demonstrations, labelled by a noisy labeller
    (eta), for the strong model and the Bayes-optimal posterior; each with its fitted rate, and
    the Chernoff rate rho* of the Bayes error for this labeller (``bayes.chernoff_rate``)."""
    labeller = Labeller(kind="noisy", level=eta)
    labels = labels_for(world, setup.target, labeller, setup.train_inputs, seed=setup.seed, stream=7)
    labels_X = dict(enumerate(labels))
    rows = []
    for n in demos:
        demo_sets, queries = _draws(setup, n, repeats, salt=11)
        answers = _refine_batch(engine, world, setup, demo_sets, queries, labels_X, generation)
        gold = [int(world.tables_KxX[setup.target, setup.test_inputs[q]]) for q in queries]
        bayes = [bayes_answer(world, [setup.train_inputs[d] for d in ds], [labels[d] for d in ds],
                              setup.test_inputs[q]) for ds, q in zip(demo_sets, queries)]
        rows.append({"n": n, "transformer": float(np.mean([a == g for a, g in zip(answers, gold)])),
                     "bayes": float(np.mean([b == g for b, g in zip(bayes, gold)])), "items": len(gold)})
    ns = [r["n"] for r in rows]
    law = label_law(world, None, setup.train_inputs, target=setup.target, eta=eta)
    return {"eta": eta, "rows": rows,
            "rate_transformer": fitted_rate(ns, [r["transformer"] for r in rows]),
            "rate_bayes": fitted_rate(ns, [r["bayes"] for r in rows]),
            "rho_star": chernoff_rate(world, law, setup.train_inputs, setup.target)}


def gamma_sweep(engine, world: World, setup: SeedSetup, *, gammas: Sequence[float], demos: int,
                repeats: int, generation) -> dict:
    """Refined-label accuracy against gamma for the misaligned labeller (concept j's label on a
    fraction gamma of the inputs), with how often the answer is j's label instead, for the strong
    model and the Bayes-optimal posterior, and the Chernoff rate rho* (0: not identifiable)."""
    rows = []
    demo_sets, queries = _draws(setup, demos, repeats, salt=13)
    gold = [int(world.tables_KxX[setup.target, setup.test_inputs[q]]) for q in queries]
    rival = [int(world.tables_KxX[setup.rival, setup.test_inputs[q]]) for q in queries]
    for gamma in gammas:
        labeller = Labeller(kind="misaligned", level=gamma, rival=setup.rival)
        table = deterministic_labels_X(world, setup.target, labeller, setup.seed,
                                       [setup.train_inputs, setup.test_inputs])
        labels = [int(table[x]) for x in setup.train_inputs]
        answers = _refine_batch(engine, world, setup, demo_sets, queries, dict(enumerate(labels)), generation)
        bayes = [bayes_answer(world, [setup.train_inputs[d] for d in ds], [labels[d] for d in ds],
                              setup.test_inputs[q]) for ds, q in zip(demo_sets, queries)]
        law = label_law(world, labels, setup.train_inputs, target=setup.target)
        rows.append({
            "gamma": gamma,
            "weak": float(np.mean(np.asarray(labels) == world.tables_KxX[setup.target, list(setup.train_inputs)])),
            "transformer": float(np.mean([a == g for a, g in zip(answers, gold)])),
            "transformer_rival": float(np.mean([a == r for a, r in zip(answers, rival)])),
            "bayes": float(np.mean([b == g for b, g in zip(bayes, gold)])),
            "bayes_rival": float(np.mean([b == r for b, r in zip(bayes, rival)])),
            "rho_star": chernoff_rate(world, law, setup.train_inputs, setup.target), "items": len(gold)})
    return {"demos": demos, "rows": rows,
            "transition_transformer": transition([r["gamma"] for r in rows], [r["transformer"] for r in rows]),
            "transition_bayes": transition([r["gamma"] for r in rows], [r["bayes"] for r in rows]),
            "transition_theory": theory_transition(rows)}


def transition(gammas: Sequence[float], accuracy: Sequence[float]) -> float | None:
    """Where accuracy first falls below the midpoint of its values at the smallest and largest
    gamma (linear interpolation); None if it never does."""
    if len(gammas) < 2:
        return None
    mid = (accuracy[0] + accuracy[-1]) / 2
    for (g0, a0), (g1, a1) in itertools.pairwise(zip(gammas, accuracy)):
        if a0 >= mid > a1:
            return float(g0 + (g1 - g0) * (a0 - mid) / (a0 - a1))
    return None


def theory_transition(rows: Sequence[dict]) -> float | None:
    """The smallest gamma of the grid at which the Chernoff rate rho* is 0 (the target is no
    longer identifiable from the labeller), after a gamma where it is positive; None if none."""
    for previous, row in itertools.pairwise(rows):
        if previous["rho_star"] > 0 and row["rho_star"] <= 0:
            return float(row["gamma"])
    return None
