"""The refined-label sweeps: accuracy against demonstrations, against gamma, and the decay rate at
several gamma.

Both measure the strong model's in-context answer to a test question after n demonstrations of
training questions with a weak labeller's answers, through the ``icl-refine`` method's own
:func:`~w2s_jax.methods.icl_refine.refine` (same prompts, same stop rule, same answer cleaning),
next to the exact Bayes-optimal answer to the same demonstrations (:mod:`.bayes`). They skip
fine-tuning: they measure the refined labels, which a student then fits (the pipeline runs measure
students). Each refined label's demonstrations come from a :mod:`.sampling` strategy (``fresh``:
its own draw from the labelled training pool; ``fixed``: one draw per seed), and each sweep draws
on its own stream, so the sweeps' draws are independent.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from w2s_jax.concept_world.bayes import bayes_answer, chernoff_rate, label_law
from w2s_jax.concept_world.labellers import Labeller, deterministic_labels_X, labels_for
from w2s_jax.concept_world.sampling import Fresh
from w2s_jax.concept_world.world import World


@dataclasses.dataclass(frozen=True)
class SeedSetup:
    """What a seed draws: the target concept k*, the rival j, and three disjoint sets of inputs
    (row order): the weak model's gold pool, the training questions (the labelled pool) and the
    test questions."""

    seed: int
    target: int
    rival: int
    train_inputs: tuple[int, ...]
    test_inputs: tuple[int, ...]
    gold_inputs: tuple[int, ...] = ()


def seed_setup(world: World, n_train: int, seed: int, *, n_gold: int = 0) -> SeedSetup:
    """The seed's target, rival and split of the inputs into ``n_gold`` gold-pool, ``n_train``
    training and the remaining test inputs (a pure function of world and seed)."""
    if n_gold + n_train >= world.config.num_inputs:
        raise ValueError(f"{n_gold} gold + {n_train} training inputs leave no test input of "
                         f"{world.config.num_inputs}")
    rng = np.random.default_rng([world.config.seed, 5, seed])
    target, rival = (int(k) for k in rng.choice(world.num_concepts, size=2, replace=False))
    order = [int(x) for x in rng.permutation(world.config.num_inputs)]
    return SeedSetup(seed, target, rival, tuple(order[n_gold:n_gold + n_train]),
                     tuple(order[n_gold + n_train:]), tuple(order[:n_gold]))


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


def draws(setup: SeedSetup, n: int, repeats: int, purpose: str, draw=Fresh()):
    """``repeats`` demonstration sets of n training positions per test question, from ``draw``
    (a :mod:`.sampling` strategy) on the stream of ``purpose``."""
    demo_sets, queries = [], []
    for q in range(len(setup.test_inputs)):
        for r in range(repeats):
            demo_sets.append(list(draw.draw(len(setup.train_inputs), n, seed=setup.seed, purpose=purpose,
                                            query=q, repeat=r)))
            queries.append(q)
    return demo_sets, queries


def _accuracies(engine, world, setup, demo_sets, queries, labels, generation) -> dict:
    """Transformer and Bayes-optimal refined answers to the same demonstrations: how often each
    is k*'s output and how often it is the rival j's."""
    answers = _refine_batch(engine, world, setup, demo_sets, queries, dict(enumerate(labels)), generation)
    bayes = [bayes_answer(world, [setup.train_inputs[d] for d in ds], [labels[d] for d in ds],
                          setup.test_inputs[q]) for ds, q in zip(demo_sets, queries)]
    gold = [int(world.tables_KxX[setup.target, setup.test_inputs[q]]) for q in queries]
    rival = [int(world.tables_KxX[setup.rival, setup.test_inputs[q]]) for q in queries]
    return {"transformer": float(np.mean([a == g for a, g in zip(answers, gold)])),
            "transformer_rival": float(np.mean([a == r for a, r in zip(answers, rival)])),
            "bayes": float(np.mean([b == g for b, g in zip(bayes, gold)])),
            "bayes_rival": float(np.mean([b == r for b, r in zip(bayes, rival)])), "items": len(gold)}


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
                repeats: int, generation, draw=Fresh()) -> dict:
    """Refined-label accuracy against the number of demonstrations, labelled by a noisy labeller
    (eta), for the strong model and the Bayes-optimal posterior; each with its fitted rate, and
    the Chernoff rate rho* of the Bayes error for this labeller (``bayes.chernoff_rate``)."""
    labeller = Labeller(kind="noisy", level=eta)
    labels = labels_for(world, setup.target, labeller, setup.train_inputs, seed=setup.seed, stream=7)
    rows = []
    for n in demos:
        demo_sets, queries = draws(setup, n, repeats, "demos", draw)
        rows.append({"n": n, **_accuracies(engine, world, setup, demo_sets, queries, labels, generation)})
    ns = [r["n"] for r in rows]
    law = label_law(world, None, setup.train_inputs, target=setup.target, eta=eta)
    return {"eta": eta, "draw": draw.name, "rows": rows,
            "rate_transformer": fitted_rate(ns, [r["transformer"] for r in rows]),
            "rate_bayes": fitted_rate(ns, [r["bayes"] for r in rows]),
            "rho_star": chernoff_rate(world, law, setup.train_inputs, setup.target)}


def _misaligned_labels(world: World, setup: SeedSetup, gamma: float) -> list[int]:
    labeller = Labeller(kind="misaligned", level=gamma, rival=setup.rival)
    table = deterministic_labels_X(world, setup.target, labeller, setup.seed,
                                   [setup.train_inputs, setup.test_inputs])
    return [int(table[x]) for x in setup.train_inputs]


def gamma_sweep(engine, world: World, setup: SeedSetup, *, gammas: Sequence[float], demos: int,
                repeats: int, generation, draw=Fresh()) -> dict:
    """Refined-label accuracy against gamma for the misaligned labeller (concept j's label on a
    fraction gamma of the inputs), with how often the answer is j's label instead, for the strong
    model and the Bayes-optimal posterior, and the Chernoff rate rho* (0: not identifiable)."""
    rows = []
    demo_sets, queries = draws(setup, demos, repeats, "gamma", draw)
    for gamma in gammas:
        labels = _misaligned_labels(world, setup, gamma)
        law = label_law(world, labels, setup.train_inputs, target=setup.target)
        rows.append({
            "gamma": gamma,
            "weak": float(np.mean(np.asarray(labels) == world.tables_KxX[setup.target, list(setup.train_inputs)])),
            **_accuracies(engine, world, setup, demo_sets, queries, labels, generation),
            "rho_star": chernoff_rate(world, law, setup.train_inputs, setup.target)})
    return {"demos": demos, "draw": draw.name, "rows": rows,
            "transition_transformer": transition([r["gamma"] for r in rows], [r["transformer"] for r in rows]),
            "transition_bayes": transition([r["gamma"] for r in rows], [r["bayes"] for r in rows]),
            "transition_theory": theory_transition(rows)}


def gamma_rates_sweep(engine, world: World, setup: SeedSetup, *, gammas: Sequence[float], demos: Sequence[int],
                      repeats: int, generation, draw=Fresh()) -> dict:
    """The decay of the refined-label error in n at several gamma < 1/2 of the misaligned labeller:
    per gamma, accuracy at each n and the fitted rates of the transformer and the Bayes-optimal
    posterior next to rho*(gamma) (which falls to 0 as gamma -> 1/2)."""
    out = []
    for gamma in gammas:
        labels = _misaligned_labels(world, setup, gamma)
        rows = []
        for n in demos:
            demo_sets, queries = draws(setup, n, repeats, "gamma-rates", draw)
            rows.append({"n": n, **_accuracies(engine, world, setup, demo_sets, queries, labels, generation)})
        ns = [r["n"] for r in rows]
        law = label_law(world, labels, setup.train_inputs, target=setup.target)
        out.append({"gamma": gamma, "rows": rows,
                    "rate_transformer": fitted_rate(ns, [r["transformer"] for r in rows]),
                    "rate_bayes": fitted_rate(ns, [r["bayes"] for r in rows]),
                    "rho_star": chernoff_rate(world, law, setup.train_inputs, setup.target)})
    return {"draw": draw.name, "gammas": out}


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
