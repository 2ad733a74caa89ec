"""The state of one run: its experiment, directory, validated data, models, keys and processes."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any

from w2s_jax.pipeline.artifacts import content_hash
from w2s_jax.pipeline.config import ExperimentConfig, ExperimentError
from w2s_jax.pipeline.models import ModelPool, model_fingerprint
from w2s_jax.tasks.base import Example


@dataclasses.dataclass(frozen=True)
class Supervisor:
    """A weak supervisor: a model, or a file of labels (rows ``{"split", "index", "answer"}``)."""

    name: str  # short, unique in the run: "w0-qwen2.5-0.5b-instruct"
    model: str | None = None
    label_file: str | None = None


def supervisors(config: ExperimentConfig) -> list[Supervisor]:
    """The experiment's weak supervisors, models first, each with a short unique name."""
    out = []
    for source, kind in [(m, "model") for m in config.models.weak] + \
                        [(f, "label_file") for f in config.models.weak_label_files]:
        stem = Path(source.rstrip("/")).name.lower() or "weak"
        out.append(Supervisor(name=f"w{len(out)}-{stem}", **{kind: source}))
    return out


class RunContext:
    """What every stage reads: the experiment, the run directory, data, models, keys.

    Arguments:
      config: the experiment.
      run_dir: the run directory.
      train, test: the validated examples of both splits.
      show_progress: draw progress bars.
    """

    def __init__(self, config: ExperimentConfig, run_dir: str | Path, *, train: list[Example],
                 test: list[Example], show_progress: bool = True, pool: ModelPool | None = None):
        import jax

        self.config, self.run_dir = config, Path(run_dir)
        self.train, self.test = train, test
        self.show_progress = show_progress
        m = config.models
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.mesh = self.train_mesh = self.rules = None
        if m.mesh is not None:
            from w2s_jax.parallel import ShardingRules, make_mesh

            # inference: this process's devices (each process labels its own share of the units);
            # fine-tuning: every device of every process (one model trained together)
            self.mesh = make_mesh(m.mesh, devices=jax.local_devices())
            self.train_mesh = self.mesh if self.process_count == 1 else make_mesh(m.mesh)
            self.rules = ShardingRules.fsdp()
        self.pool = pool or ModelPool(dtype=m.dtype, chat=m.chat, batch_size=m.batch_size,
                                      length_bucket=m.length_bucket, max_loaded=m.max_loaded,
                                      mesh=self.mesh, rules=self.rules, streams=m.streams)
        self.students: dict[str, Any] = {}  # fine-tuned models of this process, by stage name
        self._fingerprints: dict[str, str] = {}
        self.data_hash = content_hash({
            "train": [(e.index, e.question, e.answer) for e in train],
            "test": [(e.index, e.question, e.answer) for e in test]})

    def fingerprint(self, model: str) -> str:
        """The content fingerprint of a model (memoised)."""
        if model not in self._fingerprints:
            try:
                self._fingerprints[model] = model_fingerprint(model)
            except (OSError, ValueError) as error:
                raise ExperimentError(f"{self.config.source}: model {model!r}: {error}") from None
        return self._fingerprints[model]

    def key(self, purpose: str):
        """The run's PRNG key for ``purpose`` (a stage name): ``fold_in(key(seed), crc32(purpose))``."""
        import jax

        return jax.random.fold_in(jax.random.key(self.config.seed), zlib.crc32(purpose.encode()))

    def barrier(self, name: str) -> None:
        """Waits for every process (a no-op on one process)."""
        if self.process_count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def task_settings(self) -> dict:
        """The task's identity in stage hashes."""
        return {"task": {"name": self.config.task.name, "options": self.config.task.options}}

    def inference_settings(self) -> dict:
        """Inference settings that change answers (not batch sizes: results do not depend on them)."""
        m = self.config.models
        return {"generation": self.config.generation, "chat": m.chat, "dtype": m.dtype,
                "seed": self.config.seed, "chunk_size": self.config.chunk_size}
