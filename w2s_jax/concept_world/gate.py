"""The pre-training quality gate: does the decoder hold the concepts?

After each chunk of pre-training, the model's in-context accuracy is measured on held-out documents
(a stream no pre-training reads): a concept k ~ alpha, n demonstrations of distinct inputs with
outputs noised as in pre-training (eps), and a query input absent from them, scored against
``f_k(query)``. The exact Bayes-optimal answer (:mod:`.bayes`) to the same prompts is the best any
model can do. The gate passes when, at every n of ``gate.demos``, the model is within
``gate.tolerance`` of the Bayes-optimal accuracy: ``max_n (bayes_n - model_n) <= tolerance``.
The tolerance is part of the experiment file, fixed before the experiment runs; pre-training goes
on chunk by chunk (each chunk a stage) up to ``gate.max_chunks`` and stops there, saying so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from w2s_jax.concept_world.bayes import bayes_answer
from w2s_jax.concept_world.world import World

HELD_OUT = 6  # the held-out documents' stream (pre-training reads streams 0-2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GateConfig:
    """The ``[gate]`` table: the criterion on the pre-trained strong model, fixed in advance."""

    demos: tuple[int, ...] = (1, 2, 4, 8)  # demonstrations per held-out prompt
    prompts: int = 256  # held-out prompts per n
    tolerance: float = 0.05  # largest allowed shortfall of the model's accuracy below Bayes
    max_chunks: int = 4  # pre-training chunks (each [strong].steps long) before giving up
    intermediate_tolerance: float = 0.25  # the intermediate model's own gate (an earlier chunk's shortfall)
    enforce: bool = True  # False: run on even when the gate fails, and say it is a smoke test

    def __post_init__(self):
        if isinstance(self.demos, (list, int)):
            object.__setattr__(self, "demos", tuple(self.demos) if isinstance(self.demos, list) else (self.demos,))
        if not self.demos or any(not isinstance(n, int) or n < 0 for n in self.demos):
            raise ValueError(f"gate.demos must be ints >= 0, got {list(self.demos)}")
        for name in ("prompts", "max_chunks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"gate.{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.tolerance, (int, float)) or not 0 <= self.tolerance < 1:
            raise ValueError(f"gate.tolerance must be in [0, 1), got {self.tolerance!r}")
        if not isinstance(self.intermediate_tolerance, (int, float)) or not 0 <= self.intermediate_tolerance < 1:
            raise ValueError(f"gate.intermediate_tolerance must be in [0, 1), got {self.intermediate_tolerance!r}")


def held_out_prompts(world: World, n: int, count: int) -> list[tuple[int, list[int], list[int], int]]:
    """``count`` held-out prompts with n demonstrations: ``(k, xs, ys, query)`` each."""
    c = world.config
    rng = np.random.default_rng([c.seed, HELD_OUT, n])
    out = []
    for _ in range(count):
        k = int(rng.choice(c.num_concepts, p=world.alpha_K))
        xs = [int(x) for x in rng.permutation(c.num_inputs)[: n + 1]]
        ys = [int(y) for y in world.tables_KxX[k, xs[:n]]]
        flip = rng.random(n) < c.noise
        for i in np.flatnonzero(flip):
            ys[i] = int(rng.integers(c.num_outputs))
        out.append((k, xs[:n], ys, xs[n]))
    return out


def in_context_curve(engine, world: World, demos: Sequence[int], prompts: int) -> list[dict]:
    """The model's and the Bayes-optimal accuracy at each n on the held-out prompts."""
    from w2s_jax.tasks.concept import first_word
    from w2s_jax.tasks.demonstrations import in_context_prompt

    rows = []
    for n in demos:
        cases = held_out_prompts(world, n, prompts)
        texts = [in_context_prompt([(world.input_token(x), world.output_token(y)) for x, y in zip(xs, ys)],
                                   world.input_token(q)) for _, xs, ys, q in cases]
        answers = engine.generate(texts, max_new_tokens=1)
        gold = [int(world.tables_KxX[k, q]) for k, _, _, q in cases]
        model = [world.parse_output(first_word(a)) for a in answers]
        bayes = [bayes_answer(world, xs, ys, q) for _, xs, ys, q in cases]
        rows.append({"n": n, "model": float(np.mean([m == g for m, g in zip(model, gold)])),
                     "bayes": float(np.mean([b == g for b, g in zip(bayes, gold)])), "prompts": len(cases)})
    return rows


def shortfall(rows: Sequence[dict]) -> dict:
    """``{"gap", "worst_n"}``: the largest shortfall of the model's accuracy below Bayes, and where."""
    gap, worst = max((r["bayes"] - r["model"], r["n"]) for r in rows)
    return {"gap": float(gap), "worst_n": worst}


def verdict(rows: Sequence[dict], tolerance: float) -> dict:
    """``{"gap", "worst_n", "tolerance", "passed"}``: the shortfall and whether it is within the
    tolerance."""
    out = shortfall(rows)
    return {**out, "tolerance": tolerance, "passed": bool(out["gap"] <= tolerance)}


def trajectory_chunks(records: Sequence[dict], intermediate_tolerance: float) -> dict:
    """Which chunks of one pre-training run serve as the three models (rule fixed in advance).

    ``records``: the gate's record of every chunk run, in order (``{"chunk", "gap", ...}``); the
    last is the strong model. The intermediate model is the first earlier chunk within
    ``intermediate_tolerance`` of Bayes-optimal (its own gate: it can learn in context, less well
    than the strong model); when no earlier chunk passes it, the chunk just before the strong one is
    taken and ``intermediate_passed`` is False. The weak model's base is the chunk before the
    intermediate one (so it missed the intermediate gate). Chunk 1 stands in where there is none.
    Returns ``{"strong", "intermediate", "weak", "intermediate_passed"}`` (chunk numbers).
    """
    if not records:
        raise ValueError("trajectory_chunks needs the record of at least one chunk")
    strong = int(records[-1]["chunk"])
    earlier = [int(r["chunk"]) for r in records[:-1] if r["gap"] <= intermediate_tolerance]
    intermediate = earlier[0] if earlier else max(1, strong - 1)
    return {"strong": strong, "intermediate": intermediate, "weak": max(1, intermediate - 1),
            "intermediate_passed": bool(earlier)}
