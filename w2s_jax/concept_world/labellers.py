"""Controlled weak labellers of the target concept, written as the pipeline's weak-label files.

Each labeller answers an input x with a label derived from the target concept's table ``f*``:

- ``noisy`` (eta): a uniformly random wrong label with probability eta, drawn per row;
- ``biased`` (delta): a fixed subset of a fraction delta of the inputs always gets a fixed wrong
  label (``f*(x) + 1 + r_x`` mod |Y|), the others the right one;
- ``misaligned`` (gamma, concept j): a fixed subset of a fraction gamma of the inputs gets concept
  j's label ``f_j(x)``, the others ``f*(x)`` (the theory's misaligned supervisor).

Subsets are nested: in each split, the first ``round(fraction n)`` of its n inputs in one seeded
permutation, so the fraction is exact on every split and the labellers of a sweep differ only
where their fractions do. A label file holds rows
``{"split", "index", "answer"}`` for both splits (``models.weak_label_files``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from w2s_jax.concept_world.world import World

KINDS = ("noisy", "biased", "misaligned")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Labeller:
    """One controlled labeller: its kind, its level (eta, delta or gamma) and, when misaligned,
    the rival concept j."""

    kind: str
    level: float
    rival: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"labeller kind must be one of {KINDS}, got {self.kind!r}")
        if not 0 <= self.level <= 1:
            raise ValueError(f"{self.kind} labeller level must be in [0, 1], got {self.level!r}")
        if (self.kind == "misaligned") != (self.rival is not None):
            raise ValueError("a misaligned labeller needs its rival concept j (and only it has one)")

    @property
    def name(self) -> str:
        """``noisy-0.30``, ``biased-0.30``, ``misaligned-0.30``: the label file's stem."""
        return f"{self.kind}-{self.level:.2f}"


def subset_order(world: World, seed: int) -> np.ndarray:
    """The seeded permutation of the inputs whose prefixes are the labellers' subsets."""
    return np.random.default_rng([world.config.seed, 2, seed]).permutation(world.config.num_inputs)


def chosen_inputs(world: World, fraction: float, seed: int, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """The inputs a biased or misaligned labeller changes: in each group (a split's inputs), the
    ``round(fraction * len(group))`` that come first in :func:`subset_order`, so the fraction is
    exact on every split (the demonstrations of refinement come from one split)."""
    rank = np.argsort(subset_order(world, seed))
    chosen = [np.asarray(sorted(g, key=lambda x: rank[x])[: int(round(fraction * len(g)))], np.int64)
              for g in groups]
    return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)


def deterministic_labels_X(world: World, target: int, labeller: Labeller, seed: int,
                           groups: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """The label of every input under a biased or misaligned labeller (shape |X|); ``groups``
    are the splits' inputs (default: all inputs as one group)."""
    if labeller.kind == "noisy":
        raise ValueError("a noisy labeller draws its labels per row; use labels_for")
    size = world.config.num_outputs
    labels = world.tables_KxX[target].copy()
    groups = [range(world.config.num_inputs)] if groups is None else groups
    chosen = chosen_inputs(world, labeller.level, seed, groups)
    if labeller.kind == "misaligned":
        labels[chosen] = world.tables_KxX[labeller.rival, chosen]
    else:
        shift = np.random.default_rng([world.config.seed, 3, seed]).integers(0, size - 1, size=len(labels))
        labels[chosen] = (labels[chosen] + 1 + shift[chosen]) % size
    return labels


def labels_for(world: World, target: int, labeller: Labeller, inputs: Sequence[int], *, seed: int,
               stream: int, groups: Sequence[Sequence[int]] | None = None) -> list[int]:
    """The labeller's output for each of ``inputs`` (rows of one split; ``stream`` tells the
    splits' noise apart; ``groups`` as in :func:`deterministic_labels_X`)."""
    inputs = np.asarray(inputs, np.int64)
    if labeller.kind != "noisy":
        return deterministic_labels_X(world, target, labeller, seed, groups)[inputs].tolist()
    size = world.config.num_outputs
    rng = np.random.default_rng([world.config.seed, 4, seed, stream, int(round(labeller.level * 1e6))])
    labels = world.tables_KxX[target, inputs].copy()
    flip = rng.random(len(inputs)) < labeller.level
    labels[flip] = (labels[flip] + 1 + rng.integers(0, size - 1, size=int(flip.sum()))) % size
    return labels.tolist()


def write_label_file(world: World, target: int, labeller: Labeller, splits: dict[str, Sequence[int]],
                     path: str | Path, *, seed: int) -> dict[str, float]:
    """Writes a weak-label file for ``splits`` (``{"train": inputs, "test": inputs}``, in row
    order); returns the labeller's accuracy on each split."""
    from w2s_jax.pipeline.artifacts import atomic_write_text

    lines, accuracy = [], {}
    for stream, (split, inputs) in enumerate(sorted(splits.items())):
        labels = labels_for(world, target, labeller, inputs, seed=seed, stream=stream,
                            groups=list(splits.values()))
        gold = world.tables_KxX[target, np.asarray(inputs, np.int64)]
        accuracy[split] = float(np.mean(np.asarray(labels) == gold))
        lines += [json.dumps({"split": split, "index": i, "answer": world.output_token(y)})
                  for i, y in enumerate(labels)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return accuracy
