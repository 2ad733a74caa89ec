"""The student stages: fine-tune on a label set, predict the test split, score the predictions."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from w2s_jax.inference.engine import Engine
from w2s_jax.parallel import place_for_inference
from w2s_jax.pipeline.models import load_model
from w2s_jax.added_fields import added_field
from w2s_jax.pipeline.refs import Inference, Model, Split, Supervisor
from w2s_jax.pipeline.stage import ChunkedStage, Resources, Stage
from w2s_jax.pipeline.stages_labels import Labels, label_file_answers
from w2s_jax.pipeline.training_log import TrainingLog


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Finetune(Stage):
    """Fine-tunes a fresh copy of the strong model on one label set with ``w2s_jax.train``.

    Its artifacts are the trainer's orbax checkpoint directory (``checkpoints/``: a killed run
    resumes there, and a later process restores the finished student from it), ``metrics.jsonl``
    (one line per optimizer step, :mod:`.training_log`) and ``loss.png``. Labels with
    ``teacher_ids``/``teacher_probs`` are fitted with ``KLToTeacher``, text labels with
    ``CrossEntropyToTokens``. Rows whose label is empty are dropped and counted in the summary.

    ``n_eval``: the labels of the last ``n_eval`` training examples (by example index) are held out
    of fine-tuning; the trainer's eval loss (every ``train.eval_every`` steps and at the end) is
    the loss on them. Which rows those are follows from the split and ``n_eval``, both hashed.
    """

    labels: Labels
    strong: Model
    train_config: Any  # w2s_jax.train.TrainConfig
    chat: bool
    task: Any
    train: Split
    n_eval: int = added_field(0)  # training examples held out for the eval loss (0: none)

    @property
    def slug(self) -> str:
        return f"finetune.{self.labels.method.name}"

    def models(self) -> list[str]:
        return [self.strong.path]

    def _prepare(self, res: Resources):
        from w2s_jax.train import CrossEntropyToTokens, KLToTeacher, SFTDataset

        res.pool.clear()  # the student and its optimizer need the memory the labellers held
        cfg = self.train_config
        # LoRA trains float32 adapters on a frozen base kept in the compute dtype (a bf16 7B base is
        # 14 GB, not 28); full fine-tuning trains, and so loads, every weight in float32
        dtype = cfg.compute_dtype if cfg.lora_rank is not None else "float32"
        model, tokenizer = load_model(self.strong.path, dtype=dtype, mesh=res.train_mesh, rules=res.rules)
        render = Engine(model, tokenizer, chat=self.chat, name="student").render
        by_index = {e.index: e for e in self.train.examples}
        held_out = self.held_out()
        rows, eval_rows, dropped = [], [], 0
        for label in self.labels.records(res.store):
            if not label["completion"].strip():
                dropped += 1
                continue
            row = {"prompt": render(self.task.prompt(by_index[label["index"]])),
                   "completion": label["completion"]}
            for field in ("teacher_ids", "teacher_probs"):
                if field in label:
                    row[field] = label[field]
            (eval_rows if label["index"] in held_out else rows).append(row)
        if not rows:
            raise ValueError(f"{self.name}: every training label is empty or held out; nothing to fine-tune on")
        if dropped:
            warnings.warn(f"{self.name}: {dropped} empty label(s) dropped", stacklevel=2)
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0

        def dataset(rows):
            return SFTDataset(rows, tokenizer, max_len=cfg.max_len, pad_id=pad_id, add_bos=not self.chat,
                              seed=cfg.seed) if rows else None

        loss = KLToTeacher() if "teacher_ids" in rows[0] else CrossEntropyToTokens()
        return model, tokenizer, dataset(rows), dataset(eval_rows), loss, dropped

    def held_out(self) -> frozenset[int]:
        """The example indices whose labels are held out of fine-tuning (the eval set)."""
        if not self.n_eval:
            return frozenset()
        return frozenset(sorted(e.index for e in self.train.examples)[-self.n_eval:])

    def _train(self, res: Resources, directory: Path, log: TrainingLog | None = None):
        import w2s_jax.train as train_module

        model, tokenizer, data, eval_data, loss, dropped = self._prepare(res)
        callbacks = (log.on_step,) if log is not None else ()
        if log is None:  # restoring the finished student: nothing to log, no eval to run again
            eval_data = None
        result = train_module.train(model, data, config=self.train_config, loss_fn=loss, eval_data=eval_data,
                                    checkpoint_dir=directory / "checkpoints",
                                    identity={"stage": self.slug, "key": self.key},
                                    show_progress=res.show_progress, mesh=res.train_mesh, rules=res.rules,
                                    callbacks=callbacks)
        ready_to_generate(model, self.train_config)
        if res.process_count > 1:  # each process answers its own test rows with its own copy
            local_copy(model, res.mesh)
        else:  # trained under FSDP; generates with its weights whole or tensor parallel
            place_for_inference(model, res.mesh)
        res.memo = {k: v for k, v in res.memo.items() if not k.startswith("student:")}  # one in memory
        res.memo[f"student:{self.key}"] = (model, tokenizer)
        return result, dropped, len(data), len(eval_data) if eval_data is not None else 0

    def execute(self, res: Resources, directory: Path) -> str:
        log = TrainingLog(directory)
        result, dropped, rows, eval_rows = self._train(res, directory, log)
        if res.process_index == 0:
            log.finish(result)
        losses = result.train_losses
        last = f", last loss {losses[max(losses)]:.4f}" if losses else ""
        evals = result.eval_losses
        held = f", eval loss {evals[max(evals)]:.4f} on {eval_rows} held-out rows" if evals else ""
        return (f"{result.step} steps on {rows} rows{last}{held}"
                + (f", {dropped} empty labels dropped" if dropped else ""))

    def student(self, res: Resources):
        """``(model, tokenizer)`` of the finished student (restored from its checkpoint if needed)."""
        if f"student:{self.key}" not in res.memo:
            self._train(res, res.store.directory(self))  # a finished checkpoint: restores, 0 steps
        return res.memo[f"student:{self.key}"]


def ready_to_generate(model, train_config) -> None:
    """The trained student as it generates (in place): LoRA adapters merged into their base
    weights, so decoding runs one product per weight, not three; and every float weight in the
    dtype it was trained computing in (``train.compute_dtype``), not its float32 master copy (a
    bf16 7B student reads 14 GB per decoded token, not 28). A float32 run is left as it is."""
    import jax.numpy as jnp
    from flax import nnx

    from w2s_jax.train import merge_lora

    if train_config.lora_rank is not None:
        merge_lora(model)
    dtype = jnp.dtype(train_config.compute_dtype)
    if dtype == jnp.float32:
        return
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param):
            value = node.get_value()
            if hasattr(value, "dtype") and value.dtype == jnp.float32:
                node.set_value(value.astype(dtype))


def local_copy(model, mesh) -> None:
    """Replaces (in place) every parameter of ``model`` sharded over several processes by a copy
    on this process's devices (``mesh`` under the inference rules, else the default device). Every
    process calls it, in the same order: each gather is a collective."""
    import jax
    import numpy as np
    from flax import nnx
    from jax.experimental import multihost_utils

    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable):
            value = node.get_value()
            if isinstance(value, jax.Array) and not value.is_fully_addressable:
                node.set_value(jax.device_put(np.asarray(multihost_utils.process_allgather(value, tiled=True))))
    if mesh is None and hasattr(model, "placed_on"):  # off the global mesh: nothing to pin activations to
        model.placed_on(None)
    place_for_inference(model, mesh)


@dataclasses.dataclass(frozen=True)
class WeakAnswerer:
    """A weak supervisor answering the test split (with the task's weak prompt), or its label file."""

    supervisor: Supervisor

    slug = "weak"

    def models(self) -> list[str]:
        return [self.supervisor.model.path] if self.supervisor.model else []

    def answer(self, res, stage, examples) -> list[str]:
        if self.supervisor.label_file:
            labels = label_file_answers(self.supervisor.label_file.path, "test", stage.test.examples)
            return [labels[e.index] for e in examples]
        task, inference = stage.task, stage.inference
        engine = res.pool.engine(self.supervisor.model.path, chat=inference.chat, dtype=inference.dtype)
        return task.answer(engine, [task.weak_prompt(e) for e in examples], examples, inference.generation,
                           key=stage.prng())


@dataclasses.dataclass(frozen=True)
class ZeroShotAnswerer:
    """The strong model, untouched."""

    strong: Model

    slug = "zero-shot"

    def models(self) -> list[str]:
        return [self.strong.path]

    def answer(self, res, stage, examples) -> list[str]:
        task, inference = stage.task, stage.inference
        engine = res.pool.engine(self.strong.path, chat=inference.chat, dtype=inference.dtype)
        return task.answer(engine, [task.prompt(e) for e in examples], examples, inference.generation,
                           key=stage.prng())


@dataclasses.dataclass(frozen=True, eq=False)
class StudentAnswerer:
    """A fine-tuned student."""

    finetune: Finetune

    @property
    def slug(self) -> str:
        return f"student.{self.finetune.labels.method.name}"

    def models(self) -> list[str]:
        return [self.finetune.strong.path]

    def answer(self, res, stage, examples) -> list[str]:
        model, tokenizer = self.finetune.student(res)
        pool = res.pool
        engine = Engine(model, tokenizer, chat=stage.inference.chat, batch_size=pool.batch_size,
                        length_bucket=pool.length_bucket, name=stage.name, mesh=res.mesh, streams=pool.streams)
        task = stage.task
        return task.answer(engine, [task.prompt(e) for e in examples], examples, stage.inference.generation,
                           key=stage.prng())


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Predict(ChunkedStage):
    """Who answers the test questions, and their answers. Records: ``{"index", "prediction"}``."""

    answerer: WeakAnswerer | ZeroShotAnswerer | StudentAnswerer
    task: Any
    test: Split
    inference: Inference

    def fields(self) -> dict:
        """The hashed fields; a student that generates merged or cast (``ready_to_generate``) says
        so, so its predictions from before that are not reused (a float32 one's key is unchanged)."""
        fields = super().fields()
        if isinstance(self.answerer, StudentAnswerer):
            cfg = self.answerer.finetune.train_config
            if cfg.lora_rank is not None or cfg.compute_dtype != "float32":
                fields["student_weights"] = "merged, in the compute dtype"
        return fields

    @property
    def slug(self) -> str:
        return f"predict.{self.answerer.slug}"

    def models(self) -> list[str]:
        return self.answerer.models()

    def units(self, res):
        return list(range(len(self.test.examples)))

    def execute(self, res, directory):
        if isinstance(self.answerer, StudentAnswerer):  # restoring a student is collective: every
            self.answerer.finetune.student(res)          # process, even one with no rows left
        return super().execute(res, directory)

    def process(self, res, units):
        examples = [self.test.examples[p] for p in units]
        answers = self.answerer.answer(res, self, examples)
        return [[{"index": e.index, "prediction": a}] for e, a in zip(examples, answers)]

    def summarize(self, records):
        return f"{len(records)} test predictions"


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Score(ChunkedStage):
    """The task's metric of each test prediction (a judge model's when ``judge`` is set).

    Records: ``{"index", <metric>: value, ...}``.
    """

    predict: Predict
    task: Any
    test: Split
    judge: Model | None = None
    judge_options: Any = None
    inference: Inference | None = None  # the judge's chat template, dtype and seed

    @property
    def slug(self) -> str:
        return f"score.{self.predict.answerer.slug}"

    def models(self) -> list[str]:
        return [self.judge.path] if self.judge else []

    def units(self, res):
        return list(range(len(self.test.examples)))

    def _judge(self, res):
        if self.judge is None:
            return None
        from w2s_jax.tasks.judge import Judge

        # the judge folds in each item's own id, so a rating depends on the item alone
        engine = res.pool.engine(self.judge.path, chat=self.inference.chat, dtype=self.inference.dtype)
        return Judge(engine, self.judge_options, key=self.prng())

    def process(self, res, units):
        predictions = {r["index"]: r["prediction"] for r in self.predict.records(res.store)}
        examples = [self.test.examples[p] for p in units]
        scores = self.task.metric(examples, [predictions[e.index] for e in examples], judge=self._judge(res))
        return [[{"index": e.index, **s}] for e, s in zip(examples, scores)]

    def summarize(self, records):
        if not records:
            return "0 scores"
        primary = next(k for k in records[0] if k not in ("index", "_unit") and not k.startswith("_"))
        values = [r[primary] for r in records if r[primary] is not None]
        mean = sum(values) / len(values) if values else float("nan")
        return f"{primary} {mean:.4f} over {len(values)} items"
