"""The concept world's setup stages and sweep stages, run by ``w2s_jax.pipeline.stage.run_stages``.

Like the pipeline's own stages, each is keyed by the hash of its settings and inputs, lives in
``RUN/stages/<name>-<key>/`` with a manifest, and is never recomputed once done; pre-training and
fine-tuning resume through the trainer's orbax checkpoints after a kill.

- ``pretrain/strong``, ``pretrain/weak``: the two decoders pre-trained on the world (different
  document streams); checkpoints with ``config.json``, safetensors and ``tokenizer.json``.
- ``data/seed-s``: the seed's train/test rows, its controlled labellers' weak-label files and
  ``setup.json`` (target k*, rival j, inputs of each split, labeller accuracies).
- ``weak-model/seed-s``: the weak decoder fine-tuned on the first few gold training examples.
- ``sweep-demos/seed-s``, ``sweep-gamma/seed-s``: the sweeps of :mod:`.sweeps` (``result.json``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from w2s_jax.concept_world.config import ConceptWorldConfig
from w2s_jax.concept_world.labellers import Labeller, write_label_file
from w2s_jax.concept_world.pretrain import pretrain
from w2s_jax.concept_world.sweeps import SeedSetup, demos_sweep, gamma_sweep, seed_setup
from w2s_jax.concept_world.world import PAD_ID, World, save_tokenizer
from w2s_jax.pipeline.artifacts import atomic_write_json, atomic_write_text, read_json
from w2s_jax.pipeline.stage import Stage

MODEL = "model"


class SetupRun:
    """What the setup stages read: the experiment, the run directory, one process.

    Arguments:
      config: the concept-world experiment.
      run_dir: the run directory (stages live under ``run_dir/stages``).
      show_progress: draw the trainer's progress bars.
    """

    process_index, process_count = 0, 1

    def __init__(self, config: ConceptWorldConfig, run_dir: str | Path, *, show_progress: bool = False):
        self.config, self.run_dir, self.show_progress = config, Path(run_dir), show_progress
        self.world = World(config.world)
        self._engine = None

    def generation(self):
        """The pipeline's ``[generation]`` settings of the experiment."""
        from w2s_jax.tasks.base import Generation

        table = dict(self.config.pipeline.get("generation", {}))
        return Generation(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})

    def engine(self, model_dir: Path):
        """An engine over the strong model, with the experiment's ``[models]`` batch settings."""
        if self._engine is None or self._engine.name != str(model_dir):
            from w2s_jax.inference import Engine
            from w2s_jax.pipeline.models import load_model

            models = self.config.pipeline.get("models", {})
            model, tokenizer = load_model(str(model_dir), layout="per_layer")  # generates only
            self._engine = Engine(model, tokenizer, batch_size=models.get("batch_size", 64),
                                  length_bucket=models.get("length_bucket", 16), name=str(model_dir),
                                  streams=models.get("streams"))
        return self._engine


class Pretrain(Stage):
    """Pre-trains the strong or the weak decoder on the world."""

    def __init__(self, which: str):
        super().__init__(f"pretrain/{which}")
        self.which = which

    def settings(self, run: SetupRun) -> dict:
        return {"world": run.config.world, "model": getattr(run.config, self.which),
                "stream": ("strong", "weak").index(self.which)}

    def model_dir(self, run: SetupRun) -> Path:
        return self.directory(run) / MODEL

    def execute(self, run: SetupRun, directory: Path) -> str:
        stats = pretrain(run.world, getattr(run.config, self.which), directory / MODEL,
                         checkpoint_dir=directory / "checkpoints", stream=self.settings(run)["stream"],
                         identity={"stage": self.name, "key": self.key(run)},
                         show_progress=run.show_progress)
        atomic_write_json(directory / "pretrain.json", stats)
        return f"{stats['steps']} steps, loss {stats['first_loss']:.3f} -> {stats['last_loss']:.3f}"


def main_labellers(config: ConceptWorldConfig, setup: SeedSetup) -> list[Labeller]:
    """The main run's controlled labellers."""
    s = config.supervisors
    return ([Labeller(kind="noisy", level=v) for v in s.noisy] + [Labeller(kind="biased", level=v) for v in s.biased]
            + [Labeller(kind="misaligned", level=v, rival=setup.rival) for v in s.misaligned])


def quality_labellers(config: ConceptWorldConfig) -> list[Labeller]:
    """The quality sweep's noisy labellers."""
    return [Labeller(kind="noisy", level=v) for v in config.sweeps.quality]


class SeedData(Stage):
    """The seed's data files, weak-label files and setup record."""

    def __init__(self, seed: int):
        super().__init__(f"data/seed-{seed}")
        self.seed = seed

    def settings(self, run: SetupRun) -> dict:
        c = run.config
        return {"world": c.world, "split": c.split, "seed": self.seed, "supervisors": c.supervisors,
                "quality": c.sweeps.quality}

    def setup(self, run: SetupRun) -> SeedSetup:
        return seed_setup(run.world, run.config.split.n_train, self.seed)

    def path(self, run: SetupRun, name: str) -> Path:
        return self.directory(run) / name

    def execute(self, run: SetupRun, directory: Path) -> str:
        world, setup = run.world, self.setup(run)
        splits = {"train": setup.train_inputs, "test": setup.test_inputs}
        for split, inputs in splits.items():
            rows = [{"question": world.input_token(x), "answer": world.output_token(int(world.tables_KxX[setup.target, x]))}
                    for x in inputs]
            atomic_write_text(directory / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        accuracy = {}
        for labeller in main_labellers(run.config, setup) + quality_labellers(run.config):
            accuracy[labeller.name] = write_label_file(world, setup.target, labeller, splits,
                                                       directory / "labellers" / f"{labeller.name}.jsonl",
                                                       seed=self.seed)
        atomic_write_json(directory / "setup.json", {**dataclasses.asdict(setup), "labellers": accuracy})
        return f"k*={setup.target}, j={setup.rival}, {len(setup.train_inputs)} train / {len(setup.test_inputs)} test"


class WeakFinetune(Stage):
    """The weak decoder fine-tuned on the first ``gold_examples`` training rows' gold answers."""

    def __init__(self, seed: int, base: Pretrain, data: SeedData):
        super().__init__(f"weak-model/seed-{seed}", [base, data])
        self.seed, self.base, self.data = seed, base, data

    def settings(self, run: SetupRun) -> dict:
        return {"weak_finetune": run.config.weak_finetune, "seed": self.seed}

    def model_dir(self, run: SetupRun) -> Path:
        return self.directory(run) / "weak-model"

    def execute(self, run: SetupRun, directory: Path) -> str:
        from w2s_jax.models import save_pretrained
        from w2s_jax.pipeline.models import load_model
        from w2s_jax.tasks.concept import Concept
        from w2s_jax.train import SFTDataset, TrainConfig, train

        c = run.config.weak_finetune
        model, tokenizer = load_model(str(self.base.model_dir(run)))
        task, source = Concept(), str(self.data.path(run, "train.jsonl"))
        lines = self.data.path(run, "train.jsonl").read_text().splitlines()[: c.gold_examples]
        examples = [task.example(json.loads(line), i, source) for i, line in enumerate(lines)]
        rows = [{"prompt": task.prompt(e).as_text(), "completion": task.target(e, e.answer)} for e in examples]
        config = TrainConfig(learning_rate=c.learning_rate, warmup_steps=0, total_steps=c.steps,
                             batch_size=min(c.batch_size, len(rows)), max_len=16, seed=self.seed)
        result = train(model, SFTDataset(rows, tokenizer, max_len=16, pad_id=PAD_ID, seed=self.seed),
                       config=config, checkpoint_dir=directory / "checkpoints",
                       identity={"stage": self.name, "key": self.key(run)}, show_progress=run.show_progress)
        save_pretrained(model, model.config, self.model_dir(run))
        save_tokenizer(run.world, self.model_dir(run))
        losses = result.train_losses
        return f"{result.step} steps on {len(rows)} gold rows" + (f", last loss {losses[max(losses)]:.3f}" if losses else "")


class Sweep(Stage):
    """One seed's demonstrations sweep (``kind = "demos"``) or gamma sweep (``kind = "gamma"``)."""

    def __init__(self, kind: str, seed: int, strong: Pretrain, data: SeedData):
        super().__init__(f"sweep-{kind}/seed-{seed}", [strong, data])
        self.kind, self.seed, self.strong, self.data = kind, seed, strong, data

    def settings(self, run: SetupRun) -> dict:
        return {"sweeps": run.config.sweeps, "generation": run.generation(), "seed": self.seed}

    def result(self, run: SetupRun) -> dict:
        return read_json(self.directory(run) / "result.json")

    def execute(self, run: SetupRun, directory: Path) -> str:
        s, setup = run.config.sweeps, self.data.setup(run)
        engine = run.engine(self.strong.model_dir(run))
        if self.kind == "demos":
            result = demos_sweep(engine, run.world, setup, demos=s.demos, eta=s.demos_eta,
                                 repeats=s.repeats, generation=run.generation())
            summary = ", ".join(f"n={r['n']}: {r['transformer']:.2f}/{r['bayes']:.2f}" for r in result["rows"])
        else:
            result = gamma_sweep(engine, run.world, setup, gammas=s.gamma, demos=s.gamma_demos,
                                 repeats=s.repeats, generation=run.generation())
            summary = ", ".join(f"g={r['gamma']:.2f}: {r['transformer']:.2f}/{r['bayes']:.2f}" for r in result["rows"])
        atomic_write_json(directory / "result.json", result)
        return f"transformer/bayes accuracy {summary}"
