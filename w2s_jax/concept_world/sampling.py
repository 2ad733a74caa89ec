"""How a refined label draws its demonstrations from the labelled pool: two strategies.

- :class:`Fresh` (the theory's assumption A4): every refined label draws its own n demonstrations,
  uniformly without replacement from the pool, independently of every other label's. Over labels,
  the demonstrations are then i.i.d. draws of the labeller's law on the pool's inputs, which is the
  process whose error decays at the Chernoff rate rho* (``bayes.chernoff_rate``).
- :class:`Fixed` (the paper's Algorithm 1): one draw of n demonstrations shared by every label of
  a seed, so all labels succeed or fail together.

A draw is a pure function of ``(seed, purpose, n, query, repeat)``: same arguments, same
demonstrations; ``purpose`` keeps the sweeps' draws independent of each other.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PURPOSES = {"demos": 11, "gamma": 13, "gamma-rates": 17}  # one independent stream per sweep


@dataclasses.dataclass(frozen=True)
class Fresh:
    """Each label's own demonstrations (assumption A4)."""

    name = "fresh"

    def draw(self, pool: int, n: int, *, seed: int, purpose: str, query: int, repeat: int) -> tuple[int, ...]:
        """n distinct positions of a pool of ``pool`` labelled questions for one label."""
        _check(pool, n)
        rng = np.random.default_rng([seed, PURPOSES[purpose], n, query, repeat])
        return tuple(int(p) for p in rng.permutation(pool)[:n])


@dataclasses.dataclass(frozen=True)
class Fixed:
    """One set of demonstrations for every label of a seed (Algorithm 1 with fixed demonstrations)."""

    name = "fixed"

    def draw(self, pool: int, n: int, *, seed: int, purpose: str, query: int, repeat: int) -> tuple[int, ...]:
        """The seed's one draw of n positions (``query`` does not matter; ``repeat`` does: each
        repeat of a sweep is another seed-level draw)."""
        _check(pool, n)
        rng = np.random.default_rng([seed, PURPOSES[purpose], n, repeat])
        return tuple(int(p) for p in rng.permutation(pool)[:n])


DRAWS = {"fresh": Fresh(), "fixed": Fixed()}


def demo_draw(name: str):
    """The strategy named ``name`` (``fresh`` or ``fixed``)."""
    if name not in DRAWS:
        raise ValueError(f"sweeps.draw must be one of {sorted(DRAWS)}, got {name!r}")
    return DRAWS[name]


def _check(pool: int, n: int) -> None:
    if not 0 <= n <= pool:
        raise ValueError(f"cannot draw {n} demonstrations from a pool of {pool} labelled questions")
