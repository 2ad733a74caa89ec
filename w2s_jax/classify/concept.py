"""The concept world in classification form: is this output the target concept's?

A seed picks a target concept k* and a rival j (``w2s_jax.concept_world.sweeps.seed_setup``) and
splits the world's inputs into training and test inputs. Each input x gives two items in the
pre-training documents' format, ``Question: x\\nAnswer: y``: its output under k* (label 1) and its
output under the rival (label 0; another output where the two concepts agree). So the label is a
property of the concept's output, and a weak model that confuses the two concepts errs
systematically, as a weak supervisor does. The weak and strong models are decoders pre-trained on
the world's documents (``w2s_jax.concept_world.stages.Pretrain``): the strong one in
``strong_chunks`` chunks of ``strong.steps`` (as the concept-world experiment pre-trains it), the
weak one either its own shorter pre-training (``[weak]``) or an earlier chunk of the strong one
(``weak_chunk``: a less pre-trained checkpoint of the same model).

A classifier reads the hidden state of an item's last token. With ``readout = "pair"`` that is
the pair's own y, where a decoder need not hold which concept the pair belongs to (it identifies a
concept at a *query*, attending back to the pairs). With ``readout = "query"`` every item is
followed by one fixed query, ``Question: x_r / Answer:``, so the last token is where the decoder
forms its posterior over concepts from the pair: x_r is the seed's first training input at which
all concepts' outputs differ (a property of the world, not of the labels), and its own items are
left out. ``items_per_input = 1`` gives each input one item, the target's or the rival's output
by a coin from the input's own generator, so no input has items with both labels to be split
between the halves. The world's vocabulary has no
yes/no answer tokens, so there is no zero-shot stage, and in-context refinement scores an item's
output among the world's outputs (:mod:`.concept_refine`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from w2s_jax.classify.stages_data import Source
from w2s_jax.concept_world.pretrain import PretrainConfig
from w2s_jax.concept_world.world import WorldConfig
from w2s_jax.pipeline import Resources, Stage
from w2s_jax.pipeline.artifacts import atomic_write_json, atomic_write_text
from w2s_jax.pipeline.config import ExperimentError, build_dataclass, check_keys

STRONG, WEAK = "concept-strong", "concept-weak"  # the models' names in models.strong / models.weak
READOUTS = ("pair", "query")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConceptWorldData:
    """The ``[concept_world]`` table: the world, its two pre-trained decoders, the test inputs."""

    world: WorldConfig
    strong: PretrainConfig
    weak: PretrainConfig | None = None  # the weak decoder's own pre-training (None: weak_chunk)
    n_test_inputs: int = 32  # inputs held out for the test split (two items each)
    strong_chunks: int = 1  # the strong decoder: this many chunks of strong.steps, each continuing the last
    weak_chunk: int = 0  # >= 1: the weak decoder is the strong one after this chunk (then no [weak])
    items_per_input: int = 2  # 2: the target's and the rival's output of every input; 1: one of them (a coin)
    readout: str = "pair"  # "pair": the item ends at y; "query": a query follows it (module docstring)

    def __post_init__(self):
        n = self.n_test_inputs
        if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= self.world.num_inputs - 4:
            raise ValueError(f"concept_world.n_test_inputs must be an int in [2, num_inputs - 4], got {n!r}")
        for name in ("strong_chunks", "weak_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (name == "strong_chunks"):
                raise ValueError(f"concept_world.{name} must be an int >= {int(name == 'strong_chunks')}, "
                                 f"got {value!r}")
        if self.weak_chunk and not self.weak_chunk < self.strong_chunks:
            raise ValueError(f"concept_world.weak_chunk = {self.weak_chunk} must be below strong_chunks = "
                             f"{self.strong_chunks} (an earlier checkpoint of the strong decoder)")
        if self.items_per_input not in (1, 2):
            raise ValueError(f"concept_world.items_per_input must be 1 or 2, got {self.items_per_input!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"concept_world.readout must be one of {READOUTS}, got {self.readout!r}")
        if (self.weak is None) == (not self.weak_chunk):
            raise ValueError("the weak decoder is either [concept_world.weak] (its own pre-training) or "
                             "concept_world.weak_chunk (a chunk of the strong one): give exactly one")


def pretrain_stages(data: ConceptWorldData) -> tuple[dict, list]:
    """``({model name: the Pretrain stage of its checkpoint}, every pre-training stage in order)``:
    the strong decoder's chunks (stream 0) and the weak decoder's own run (stream 1), if it has one."""
    from w2s_jax.concept_world.stages import Pretrain

    chain, stage = [], None
    for c in range(1, data.strong_chunks + 1):
        stage = Pretrain(name="pretrain/strong" + (f"/chunk-{c}" if c > 1 else ""), world=data.world,
                         model=data.strong, stream=0, previous=stage)
        chain.append(stage)
    if data.weak_chunk:
        return {STRONG: chain[-1], WEAK: chain[data.weak_chunk - 1]}, chain
    weak = Pretrain(name="pretrain/weak", world=data.world, model=data.weak, stream=1)
    return {STRONG: chain[-1], WEAK: weak}, [*chain, weak]


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class ConceptItems(Stage):
    """A seed's ``train.jsonl`` and ``test.jsonl`` rows ``{"text", "label"}`` and ``setup.json``."""

    world: WorldConfig
    n_test_inputs: int
    seed: int
    items_per_input: int = 2
    readout: str = "pair"

    @property
    def slug(self) -> str:
        return "concept-items"

    def source(self, store, split: str) -> Source:
        """The file of ``split`` as a data source identified by this stage's key."""
        return Source(str(Path(store.directory(self)) / f"{split}.jsonl"), made_by=self.key)

    def execute(self, res: Resources, directory: Path) -> str:
        from w2s_jax.concept_world.sweeps import seed_setup
        from w2s_jax.concept_world.world import World
        from w2s_jax.tasks.demonstrations import demonstration, query

        world = World(self.world)
        setup = seed_setup(world, self.world.num_inputs - self.n_test_inputs, self.seed)
        tables_KxX, num_outputs = world.tables_KxX, self.world.num_outputs
        train_inputs, suffix, reference = list(setup.train_inputs), "", None
        if self.readout == "query":
            reference = query_input(tables_KxX, train_inputs)
            train_inputs.remove(reference)
            suffix = "\n\n" + query(world.input_token(reference))
        counts = {}
        for split, inputs in (("train", train_inputs), ("test", setup.test_inputs)):
            rows = []
            for x in inputs:
                rng = np.random.default_rng([self.world.seed, 7, self.seed, x])
                right, other = int(tables_KxX[setup.target, x]), int(tables_KxX[setup.rival, x])
                if other == right:  # the concepts agree here: another output, drawn from the input's own generator
                    other = (right + 1 + int(rng.integers(num_outputs - 1))) % num_outputs
                pair = ((right, 1), (other, 0))
                if self.items_per_input == 1:
                    pair = (pair[int(rng.integers(2))],)
                for y, label in pair:
                    text = demonstration(world.input_token(x), world.output_token(y)) + suffix
                    rows.append({"text": text, "label": label})
            atomic_write_text(directory / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
            counts[split] = len(rows)
        atomic_write_json(directory / "setup.json", {"target": setup.target, "rival": setup.rival,
                                                     "train_inputs": train_inputs,
                                                     "test_inputs": list(setup.test_inputs),
                                                     "query_input": reference})
        return (f"k*={setup.target}, rival {setup.rival}: {counts['train']} train / {counts['test']} test items"
                + (f", read out at a query of x{reference}" if reference is not None else ""))


def query_input(tables_KxX: np.ndarray, inputs: list[int]) -> int:
    """The first of ``inputs`` at which every concept's output differs (ValueError if none)."""
    for x in inputs:
        if len(set(tables_KxX[:, x].tolist())) == tables_KxX.shape[0]:
            return x
    raise ValueError("no training input has a different output under every concept: the query "
                     "read-out needs one (more outputs or fewer concepts)")


def concept_world_from_table(table, source: str) -> "ConceptWorldData":
    """The experiment file's ``[concept_world]`` table, checked (an ExperimentError names the bad key)."""
    if not isinstance(table, Mapping):
        raise ExperimentError(f"{source}: [concept_world] must be a table, got {table!r}")
    scalars = ("n_test_inputs", "strong_chunks", "weak_chunk", "items_per_input", "readout")
    check_keys(table, ("world", "strong", "weak", *scalars), "[concept_world]", source)
    parts = {name: build_dataclass(cls, table.get(name, {}), f"[concept_world.{name}]", source)
             for name, cls in (("world", WorldConfig), ("strong", PretrainConfig), ("weak", PretrainConfig))
             if name != "weak" or "weak" in table}
    return build_dataclass(ConceptWorldData, {k: v for k, v in table.items() if k in scalars},
                           "[concept_world]", source, **parts)
