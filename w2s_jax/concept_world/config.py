"""The concept-world experiment file: ``kind = "concept-world"`` and its own tables.

::

    kind = "concept-world"
    name = "concept-world"
    worlds = [0, 1, 2]           # independent replicates: world tables and pre-training seeds
    seeds = [0, 1]               # per world: one target concept, split and labeller draw per seed

    [world]                      # WorldConfig: K, |X|, |Y|, alpha, pairs per document, eps
    [strong]                     # PretrainConfig of the decoder (steps: one chunk)
    [gate]                       # GateConfig: its in-context accuracy vs Bayes; the intermediate's gate
    [weak_finetune]              # the weak model's fine-tuning on the seed's gold pool
    [split]                      # gold-pool, training and test inputs (the rest are test)
    [supervisors]                # the main run's weak supervisors
    [sweeps]                     # the refined-label sweeps and the quality run

    # tables passed to every pipeline run as they are (see docs/pipeline.md):
    [methods] [train] [generation] [models] [report]    (and chunk_size)

Each world w of ``worlds`` is a replicate: its concept tables are drawn with ``world.seed = w`` and
its pre-training starts from ``strong.seed + w``; the strong model, the intermediate model and the
weak model's base are chunks of that one pre-training (``experiment``). Within a world, the target
concept k*, the rival concept j, the split of the inputs (gold pool / training / test), the
labellers' draws and the pipeline's seed depend on the seed. A (world, seed) pair is the unit that
fails together, and every interval of the report resamples worlds and seeds within them
(``clusters``). ``--quick`` applies :data:`QUICK` (a small world, short budgets, one seed) after
the file and before ``--set``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from w2s_jax.concept_world.gate import GateConfig
from w2s_jax.concept_world.pretrain import PretrainConfig
from w2s_jax.concept_world.sampling import demo_draw
from w2s_jax.concept_world.world import WorldConfig
from w2s_jax.pipeline.config import ExperimentError, apply_overrides, build_dataclass

KIND = "concept-world"
PIPELINE_TABLES = ("methods", "train", "generation", "models", "report")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeakFinetuneConfig:
    """The weak model's supervision: gold examples of the target concept from the seed's gold pool
    (inputs that are neither training nor test questions)."""

    gold_examples: int = 6  # gold-pool inputs (the first ones) with their gold answers
    steps: int = 40  # Adam steps on them
    learning_rate: float = 3e-3
    batch_size: int = 6

    def __post_init__(self):
        for name in ("gold_examples", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"weak_finetune.{name} must be an int >= 1, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"weak_finetune.learning_rate must be > 0, got {self.learning_rate!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """The inputs of a seed: ``n_gold`` for the weak model's gold pool, ``n_train`` training
    questions (the labelled pool), the rest test questions; the three are disjoint."""

    n_gold: int = 16
    n_train: int = 48

    def __post_init__(self):
        if not isinstance(self.n_train, int) or self.n_train < 2:
            raise ValueError(f"split.n_train must be an int >= 2, got {self.n_train!r}")
        if not isinstance(self.n_gold, int) or self.n_gold < 0:
            raise ValueError(f"split.n_gold must be an int >= 0, got {self.n_gold!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SupervisorsConfig:
    """The main run's weak supervisors: the weak model and controlled labellers."""

    weak_model: bool = True  # the pre-trained weak model fine-tuned on gold examples
    noisy: tuple[float, ...] = ()  # eta of each noisy labeller
    biased: tuple[float, ...] = (0.3,)  # delta of each biased labeller
    misaligned: tuple[float, ...] = (0.3,)  # gamma of each misaligned labeller

    def __post_init__(self):
        for name in ("noisy", "biased", "misaligned"):
            _levels(self, name, "supervisors")
        if not (self.weak_model or self.noisy or self.biased or self.misaligned):
            raise ValueError("supervisors: name at least one weak supervisor")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepsConfig:
    """The sweeps (an empty list skips that sweep)."""

    draw: str = "fresh"  # each label's demonstrations: "fresh" (its own draw) or "fixed" (one per seed)
    demos: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 8, 11)  # demonstrations per query
    demos_eta: float = 0.2  # the demonstrations' labeller in the demos sweep: noisy with this eta
    quality: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)  # eta of the noisy labellers of the quality sweep
    quality_methods: tuple[str, ...] = ("naive", "icl-refine", "gold")  # methods of its pipeline run
    sizes: tuple[int, ...] = ()  # training-set sizes m (prefixes of the training split), one run each
    size_eta: float = 0.2  # the noisy labeller of the size runs
    gamma: tuple[float, ...] = (0.0, 0.1667, 0.3333, 0.4167, 0.5, 0.5833, 0.6667, 0.8333, 1.0)
    gamma_demos: int = 11  # demonstrations per query in the gamma sweep
    gamma_rates: tuple[float, ...] = ()  # gammas < 1/2 at which the decay in n is swept
    gamma_rate_demos: tuple[int, ...] = (1, 2, 4, 8)  # the n of that sweep
    repeats: int = 4  # demonstration draws per test question (every sweep)

    def __post_init__(self):
        for name in ("quality", "gamma", "gamma_rates"):
            _levels(self, name, "sweeps")
        demo_draw(self.draw)
        for name in ("demos", "quality_methods", "gamma_rate_demos", "sizes"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if any(not isinstance(m, int) or m < 2 for m in self.sizes):
            raise ValueError(f"sweeps.sizes must be ints >= 2, got {list(self.sizes)}")
        if not 0 <= self.size_eta < 1:
            raise ValueError(f"sweeps.size_eta must be in [0, 1), got {self.size_eta!r}")
        for name in ("demos", "gamma_rate_demos"):
            if any(not isinstance(n, int) or n < 0 for n in getattr(self, name)):
                raise ValueError(f"sweeps.{name} must be ints >= 0, got {list(getattr(self, name))}")
        for name in ("gamma_demos", "repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"sweeps.{name} must be an int >= 1, got {value!r}")
        if not 0 <= self.demos_eta < 1:
            raise ValueError(f"sweeps.demos_eta must be in [0, 1), got {self.demos_eta!r}")


def _levels(obj, name: str, table: str) -> None:
    value = getattr(obj, name)
    if isinstance(value, (int, float)):
        value = (value,)
    value = tuple(value)
    if any(not isinstance(v, (int, float)) or not 0 <= v <= 1 for v in value):
        raise ValueError(f"{table}.{name} must be numbers in [0, 1], got {list(value)}")
    object.__setattr__(obj, name, tuple(float(v) for v in value))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConceptWorldConfig:
    """A whole concept-world experiment (see the module docstring)."""

    name: str = "concept-world"
    worlds: tuple[int, ...] = (0,)  # replicates: world tables and pre-training seeds
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    world: WorldConfig = WorldConfig()
    strong: PretrainConfig = PretrainConfig()
    gate: GateConfig = GateConfig()
    weak_finetune: WeakFinetuneConfig = WeakFinetuneConfig()
    split: SplitConfig = SplitConfig()
    supervisors: SupervisorsConfig = SupervisorsConfig()
    sweeps: SweepsConfig = SweepsConfig()
    pipeline: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # pipeline tables as given
    source: str = ""

    def __post_init__(self):
        for name in ("seeds", "worlds"):
            if isinstance(getattr(self, name), int):
                object.__setattr__(self, name, (getattr(self, name),))
            values = tuple(getattr(self, name))
            if not values or any(not isinstance(s, int) or s < 0 for s in values) or len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct ints >= 0, got {list(values)}")
            object.__setattr__(self, name, values)
        if not self.split.n_gold + self.split.n_train < self.world.num_inputs:
            raise ValueError(f"split.n_gold + split.n_train = {self.split.n_gold + self.split.n_train} leaves "
                             f"no test input (world.num_inputs = {self.world.num_inputs})")
        if self.weak_finetune.gold_examples > self.split.n_gold:
            raise ValueError(f"weak_finetune.gold_examples = {self.weak_finetune.gold_examples} exceeds "
                             f"split.n_gold = {self.split.n_gold} (the gold pool)")
        if max(self.sweeps.sizes, default=0) > self.split.n_train:
            raise ValueError(f"sweeps.sizes must be at most split.n_train = {self.split.n_train}, "
                             f"got {list(self.sweeps.sizes)}")
        demos = (*self.sweeps.demos, self.sweeps.gamma_demos, *self.sweeps.gamma_rate_demos)
        if max(demos) > self.split.n_train:
            raise ValueError(f"the sweeps draw demonstrations from the {self.split.n_train} training "
                             f"questions: at most {self.split.n_train}, got {max(demos)}")
        longest = max(max(demos), max(self.gate.demos)) + 1
        if longest > self.world.pairs_per_document:
            raise ValueError(f"a sweep prompt of {longest} pairs is longer than a pre-training document "
                             f"(world.pairs_per_document = {self.world.pairs_per_document})")

    @classmethod
    def quick(cls) -> ConceptWorldConfig:
        """The ``--quick`` preset on its own (:data:`QUICK` over the defaults)."""
        return concept_world_from_dict(apply_overrides({"kind": KIND}, _nested(QUICK), "<quick>"),
                                       source="<quick>")


# The --quick preset: a small world, short budgets, one seed (dotted keys, applied after the file).
QUICK: dict[str, Any] = {
    "worlds": [0], "seeds": [0],
    "world.num_concepts": 4, "world.num_inputs": 20, "world.num_outputs": 16,
    "world.pairs_per_document": 8, "world.noise": 0.2,
    "strong.hidden_size": 32, "strong.steps": 200, "strong.batch_size": 32, "strong.documents": 2048,
    "strong.warmup_steps": 20, "strong.checkpoint_every": 0,
    # the gate is measured and reported, but a 200-step model is not held to it: a smoke test
    "gate.demos": [1, 4], "gate.prompts": 32, "gate.max_chunks": 1, "gate.enforce": False,
    "weak_finetune.gold_examples": 3, "weak_finetune.steps": 5, "weak_finetune.batch_size": 3,
    "split.n_gold": 4, "split.n_train": 10,
    "supervisors.biased": [], "supervisors.misaligned": [0.3],
    "sweeps.demos": [0, 1, 2, 4], "sweeps.quality": [0.0, 0.5], "sweeps.gamma": [0.0, 0.5, 1.0],
    "sweeps.gamma_demos": 4, "sweeps.repeats": 1, "sweeps.gamma_rates": [0.2], "sweeps.gamma_rate_demos": [1, 4], "sweeps.quality_methods": ["naive", "icl-refine"],
    "sweeps.sizes": [5, 10],
    "train.total_steps": 4, "train.warmup_steps": 1, "train.batch_size": 5,
    "report.bootstrap": 100,
}

_TOP = ("kind", "name", "worlds", "seeds", "description", "chunk_size", "world", "strong", "gate", "weak_finetune", "split", "supervisors", "sweeps", *PIPELINE_TABLES)


def _nested(dotted: Mapping[str, Any]) -> list[str]:
    import json

    return [f"{key}={json.dumps(value)}" for key, value in dotted.items()]


def read_raw(path: str | Path) -> dict:
    """The parsed TOML of an experiment file (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"{path}: experiment file not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ExperimentError(f"{path}: not valid TOML: {error}") from None


def load_concept_world(path: str | Path, *, overrides: Sequence[str] = (), quick: bool = False) -> ConceptWorldConfig:
    """Reads a concept-world file; ``quick`` applies :data:`QUICK` before ``overrides``.

    Unknown keys are errors naming the file, the table and the closest valid key.
    """
    source = str(path)
    raw = read_raw(path)
    if quick:
        raw = apply_overrides(raw, _nested(QUICK), source)
    raw = apply_overrides(raw, overrides, source)
    return concept_world_from_dict(raw, source=source, default_name=Path(path).stem)


def concept_world_from_dict(raw: Mapping[str, Any], *, source: str = "<experiment>",
                            default_name: str = KIND) -> ConceptWorldConfig:
    """The typed experiment of a parsed concept-world document."""
    from w2s_jax.pipeline.config import check_keys as _check_keys

    for removed in ("weak", "intermediate"):
        if removed in raw:
            raise ExperimentError(f"{source}: [{removed}] is no longer read: the weak model's base and the "
                                  "intermediate model are chunks of the strong pre-training "
                                  "(gate.intermediate_tolerance); remove it")
    _check_keys(raw, _TOP, "the top level", source)
    if raw.get("kind") != KIND:
        raise ExperimentError(f"{source}: kind must be {KIND!r} for this loader, got {raw.get('kind')!r}")
    tables = {}
    for name, cls in (("world", WorldConfig), ("strong", PretrainConfig), ("gate", GateConfig),
                      ("weak_finetune", WeakFinetuneConfig), ("split", SplitConfig),
                      ("supervisors", SupervisorsConfig), ("sweeps", SweepsConfig)):
        if name in raw:
            tables[name] = build_dataclass(cls, dict(raw[name]), f"[{name}]", source)
    pipeline = {k: raw[k] for k in (*PIPELINE_TABLES, "chunk_size") if k in raw}
    for key in ("task", "data"):
        if key in raw:
            raise ExperimentError(f"{source}: [{key}] is written by the concept world; remove it")
    for key in ("strong", "weak", "weak_label_files", "intermediate"):
        if key in raw.get("models", {}):
            raise ExperimentError(f"{source}: models.{key} is set by the concept world; remove it")
    try:
        return ConceptWorldConfig(name=str(raw.get("name", default_name)),
                                  seeds=raw.get("seeds", ConceptWorldConfig.seeds),
                                  worlds=raw.get("worlds", ConceptWorldConfig.worlds), pipeline=pipeline,
                                  source=source, **tables)
    except (TypeError, ValueError) as error:
        raise ExperimentError(f"{source}: {error}") from None
