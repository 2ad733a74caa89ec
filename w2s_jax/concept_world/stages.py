"""The concept world's setup stages and sweep stages: pipeline stages like every other.

Each is a frozen value keyed by its fields (``w2s_jax.pipeline.stage``), lives in the store under
its key with a manifest, and is never recomputed once done; pre-training and fine-tuning resume
through the trainer's orbax checkpoints after a kill. The models and files they write are named
by their keys in the pipeline stages that read them (``Model(path, made_by=key)``), so the whole
experiment is one graph whose keys are known before anything runs.

- ``pretrain/strong/world-w[/chunk-c]``: the decoder pre-trained on the world in chunks, each a
  stage that continues the previous one, until the gate (:mod:`.gate`) passes; checkpoints with
  ``config.json``, safetensors and ``tokenizer.json``. Its chunks are the strong model, the
  intermediate model and the weak model's base (:func:`.gate.trajectory_chunks`).
- ``curve/...``: a chunk's in-context accuracy on held-out documents next to the Bayes-optimal
  accuracy (the gate's measurement, and each model's reported curve).
- ``data/seed-s``: the seed's gold-pool, train and test rows, its controlled labellers' weak-label
  files and ``setup.json`` (target k*, rival j, inputs of each split, labeller accuracies).
- ``weak-model/seed-s``: the weak decoder fine-tuned on gold examples of the seed's gold pool,
  which is disjoint from the questions it labels.
- ``sweep-demos/seed-s``, ``sweep-gamma/seed-s``, ``sweep-gamma-rates/seed-s``: the sweeps of
  :mod:`.sweeps` (``result.json``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from w2s_jax.concept_world.config import ConceptWorldConfig, SplitConfig, SupervisorsConfig
from w2s_jax.concept_world.labellers import Labeller, write_label_file
from w2s_jax.concept_world.pretrain import PretrainConfig, pretrain
from w2s_jax.concept_world.gate import in_context_curve, shortfall
from w2s_jax.concept_world.sampling import demo_draw
from w2s_jax.concept_world.sweeps import SeedSetup, demos_sweep, gamma_rates_sweep, gamma_sweep, seed_setup
from w2s_jax.concept_world.world import PAD_ID, World, WorldConfig, save_tokenizer
from w2s_jax.pipeline import Resources, Stage
from w2s_jax.pipeline.artifacts import atomic_write_json, atomic_write_text, read_json

MODEL = "model"


def world_of(res: Resources, config: WorldConfig) -> World:
    """The world of ``config``, built once per process."""
    slot = f"world:{config}"
    if slot not in res.memo:
        res.memo[slot] = World(config)
    return res.memo[slot]


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Pretrain(Stage):
    """Pre-trains a decoder on the world's document stream ``stream`` (0; the gate's held-out
    documents are another) for ``model.steps`` steps: from fresh weights, or continuing
    ``previous`` (the chunk before, whose weights it starts from)."""

    world: WorldConfig
    model: PretrainConfig
    stream: int
    previous: "Pretrain | None" = None

    @property
    def chunk(self) -> int:
        """1 for the first chunk, 2 for the one after it, ..."""
        return 1 if self.previous is None else self.previous.chunk + 1

    @property
    def total_steps(self) -> int:
        return self.model.steps * self.chunk

    @property
    def slug(self) -> str:
        return "pretrain"

    def model_dir(self, store) -> Path:
        return store.directory(self) / MODEL

    def execute(self, res: Resources, directory: Path) -> str:
        init = None if self.previous is None else self.previous.model_dir(res.store)
        stats = pretrain(world_of(res, self.world), self.model, directory / MODEL,
                         checkpoint_dir=directory / "checkpoints", stream=self.stream,
                         identity={"stage": self.slug, "key": self.key}, show_progress=res.show_progress,
                         init_from=init, chunk=self.chunk - 1)
        stats = {**stats, "chunk": self.chunk, "total_steps": self.total_steps}
        atomic_write_json(directory / "pretrain.json", stats)
        first, last = (f"{v:.3f}" if v is not None else "n/a" for v in (stats["first_loss"], stats["last_loss"]))
        return f"chunk {self.chunk}: {stats['steps']} steps ({self.total_steps} in all), loss {first} -> {last}"


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Curve(Stage):
    """A pre-trained decoder's in-context accuracy on held-out documents against the Bayes-optimal
    accuracy (:mod:`.gate`) and its largest shortfall; the gate's verdict is the experiment's."""

    model: Pretrain
    demos: tuple[int, ...]  # demonstrations per held-out prompt
    prompts: int  # held-out prompts per n

    @property
    def slug(self) -> str:
        return "curve"

    def models(self) -> list[str]:
        return ["(a pre-trained decoder)"]

    def result(self, store) -> dict:
        return read_json(store.directory(self) / "result.json")

    def execute(self, res: Resources, directory: Path) -> str:
        world = world_of(res, self.model.world)
        engine = res.pool.engine(str(self.model.model_dir(res.store)), chat=False, dtype="float32")
        rows = in_context_curve(engine, world, self.demos, self.prompts)
        result = {"rows": rows, "steps": self.model.total_steps, **shortfall(rows)}
        atomic_write_json(directory / "result.json", result)
        curve = ", ".join(f"n={r['n']}: {r['model']:.2f}/{r['bayes']:.2f}" for r in rows)
        return f"model/Bayes {curve}; largest shortfall {result['gap']:.3f}"


def main_labellers(config: ConceptWorldConfig | SupervisorsConfig, setup: SeedSetup) -> list[Labeller]:
    """The main run's controlled labellers."""
    s = config.supervisors if isinstance(config, ConceptWorldConfig) else config
    return ([Labeller(kind="noisy", level=v) for v in s.noisy] + [Labeller(kind="biased", level=v) for v in s.biased]
            + [Labeller(kind="misaligned", level=v, rival=setup.rival) for v in s.misaligned])


def quality_labellers(levels) -> list[Labeller]:
    """The quality sweep's noisy labellers (``levels``: the etas, or the whole experiment)."""
    levels = levels.sweeps.quality if isinstance(levels, ConceptWorldConfig) else levels
    return [Labeller(kind="noisy", level=v) for v in levels]


def size_labeller(eta: float) -> Labeller:
    """The size runs' noisy labeller."""
    return Labeller(kind="noisy", level=eta)


def size_file(m: int, eta: float) -> str:
    """The weak-label file of the size run with m training questions."""
    return f"size{m}-{size_labeller(eta).name}.jsonl"


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class SeedData(Stage):
    """The seed's data files, weak-label files and setup record."""

    world: WorldConfig
    split: SplitConfig
    seed: int
    supervisors: SupervisorsConfig
    quality: tuple[float, ...]
    sizes: tuple[int, ...] = ()  # training-set sizes of the size runs
    size_eta: float = 0.2  # their noisy labeller

    @property
    def slug(self) -> str:
        return "data"

    def setup(self, world: World) -> SeedSetup:
        return seed_setup(world, self.split.n_train, self.seed, n_gold=self.split.n_gold)

    def path(self, store, name: str) -> Path:
        return store.directory(self) / name

    def execute(self, res: Resources, directory: Path) -> str:
        world = world_of(res, self.world)
        setup = self.setup(world)
        splits = {"train": setup.train_inputs, "test": setup.test_inputs}
        for split, inputs in {**splits, "gold": setup.gold_inputs}.items():
            rows = [{"question": world.input_token(x), "answer": world.output_token(int(world.tables_KxX[setup.target, x]))}
                    for x in inputs]
            atomic_write_text(directory / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        accuracy = {}
        for labeller in main_labellers(self.supervisors, setup) + quality_labellers(self.quality):
            accuracy[labeller.name] = write_label_file(world, setup.target, labeller, splits,
                                                       directory / "labellers" / f"{labeller.name}.jsonl",
                                                       seed=self.seed)
        for m in self.sizes:  # the size runs: the first m training rows, labelled by one noisy labeller
            train = setup.train_inputs[:m]
            rows = [{"question": world.input_token(x), "answer": world.output_token(int(world.tables_KxX[setup.target, x]))}
                    for x in train]
            atomic_write_text(directory / f"train-{m}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
            labeller = size_labeller(self.size_eta)
            accuracy[f"size{m}-{labeller.name}"] = write_label_file(
                world, setup.target, labeller, {"train": train, "test": setup.test_inputs},
                directory / "labellers" / size_file(m, self.size_eta), seed=self.seed)
        atomic_write_json(directory / "setup.json", {**dataclasses.asdict(setup), "labellers": accuracy})
        return f"k*={setup.target}, j={setup.rival}, {len(setup.train_inputs)} train / {len(setup.test_inputs)} test"


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class WeakFinetune(Stage):
    """The weak decoder fine-tuned on the first ``gold_examples`` rows of the seed's gold pool
    (inputs that are neither training nor test questions, so nothing it labels was trained on)."""

    base: Pretrain
    data: SeedData
    weak_finetune: Any  # WeakFinetuneConfig
    seed: int

    @property
    def slug(self) -> str:
        return "weak-model"

    def model_dir(self, store) -> Path:
        return store.directory(self) / "weak-model"

    def models(self) -> list[str]:
        return [f"the model of {self.base.name}"]

    def execute(self, res: Resources, directory: Path) -> str:
        from w2s_jax.models import save_pretrained
        from w2s_jax.pipeline.models import load_model
        from w2s_jax.tasks.concept import Concept
        from w2s_jax.train import SFTDataset, TrainConfig, train

        c, store = self.weak_finetune, res.store
        model, tokenizer = load_model(str(self.base.model_dir(store)))
        task, source = Concept(), str(self.data.path(store, "gold.jsonl"))
        lines = self.data.path(store, "gold.jsonl").read_text().splitlines()[: c.gold_examples]
        examples = [task.example(json.loads(line), i, source) for i, line in enumerate(lines)]
        rows = [{"prompt": task.prompt(e).as_text(), "completion": task.target(e, e.answer)} for e in examples]
        config = TrainConfig(learning_rate=c.learning_rate, warmup_steps=0, total_steps=c.steps,
                             batch_size=min(c.batch_size, len(rows)), max_len=16, seed=self.seed)
        result = train(model, SFTDataset(rows, tokenizer, max_len=16, pad_id=PAD_ID, seed=self.seed),
                       config=config, checkpoint_dir=directory / "checkpoints",
                       identity={"stage": self.slug, "key": self.key}, show_progress=res.show_progress)
        save_pretrained(model, model.config, self.model_dir(store))
        save_tokenizer(world_of(res, self.data.world), self.model_dir(store))
        losses = result.train_losses
        return f"{result.step} steps on {len(rows)} gold rows" + (f", last loss {losses[max(losses)]:.3f}" if losses else "")


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Sweep(Stage):
    """One seed's demonstrations sweep (``kind = "demos"``), gamma sweep (``"gamma"``) or decay
    rates at several gamma (``"gamma-rates"``)."""

    kind: str
    strong: Pretrain
    data: SeedData
    sweeps: Any  # SweepsConfig
    generation: Any  # w2s_jax.tasks.Generation
    seed: int

    @property
    def slug(self) -> str:
        return f"sweep-{self.kind}"

    def models(self) -> list[str]:
        return [f"the model of {self.strong.name}"]

    def result(self, store) -> dict:
        return read_json(store.directory(self) / "result.json")

    def execute(self, res: Resources, directory: Path) -> str:
        world = world_of(res, self.data.world)
        s, setup = self.sweeps, self.data.setup(world)
        engine = res.pool.engine(str(self.strong.model_dir(res.store)), chat=False, dtype="float32")
        draw = demo_draw(s.draw)
        if self.kind == "demos":
            result = demos_sweep(engine, world, setup, demos=s.demos, eta=s.demos_eta,
                                 repeats=s.repeats, generation=self.generation, draw=draw)
            summary = ", ".join(f"n={r['n']}: {r['transformer']:.2f}/{r['bayes']:.2f}" for r in result["rows"])
        elif self.kind == "gamma-rates":
            result = gamma_rates_sweep(engine, world, setup, gammas=s.gamma_rates, demos=s.gamma_rate_demos,
                                       repeats=s.repeats, generation=self.generation, draw=draw)
            summary = ", ".join(f"g={g['gamma']:.2f}: rho*={g['rho_star']:.2f}" for g in result["gammas"])
        else:
            result = gamma_sweep(engine, world, setup, gammas=s.gamma, demos=s.gamma_demos,
                                 repeats=s.repeats, generation=self.generation, draw=draw)
            summary = ", ".join(f"g={r['gamma']:.2f}: {r['transformer']:.2f}/{r['bayes']:.2f}" for r in result["rows"])
        atomic_write_json(directory / "result.json", result)
        return f"transformer/bayes accuracy {summary}"
