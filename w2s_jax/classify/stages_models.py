"""The classifier stages: fine-tune a classifier on a part's labels, and its probabilities.

:class:`FitClassifier` trains ``Classifier(base)`` (a zero-initialised head on the last-token
hidden state; full fine-tuning, or LoRA when ``train.lora_rank`` is set) on half A or half B with
gold labels (the weak model, the strong ceiling) or with soft labels another stage wrote (a weak
model's, a probe's, the in-context refinement's): every stage with labels has
``soft_labels(store) -> {index: p(class 1)}``. Its artifacts are the trainer's orbax checkpoints
(a killed run resumes there; a later process restores the finished classifier from them) and
``metrics.jsonl``. :class:`Probabilities` is a trained classifier's p(class 1) on a part.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


from w2s_jax.classify.config import LossChoice
from w2s_jax.classify.stages_data import Items
from w2s_jax.pipeline import ChunkedStage, Resources, Stage
from w2s_jax.pipeline.refs import Model, label_field
from w2s_jax.pipeline.training_log import TrainingLog


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class FitClassifier(Stage):
    """A classifier fine-tuned from ``base`` on ``part`` of ``items``: on gold labels when
    ``labels`` is None, else on ``labels.soft_labels`` (items without one are left out: a filter).
    ``loss`` None is soft cross-entropy (``KLToTeacher(kind="cross_entropy")``). With ``holdout``
    (0 or 1) the items of that parity (``index % 2``) are held out: trained on the other half only,
    so it can label them (strong-to-strong rounds)."""

    base: Model
    items: Items
    part: str
    holdout: int | None = None
    labels: Stage | None = None
    loss: LossChoice | None = None
    train: Any  # w2s_jax.train.TrainConfig (its seed is the run's seed; max_len: tokens per item)
    role: str = label_field(default="student")  # "weak", "ceiling" or "student", for slugs

    @property
    def slug(self) -> str:
        return f"classifier.{self.role}"

    def models(self) -> list[str]:
        return [self.base.path]

    def rows(self, store) -> list[dict]:
        items = [item for item in self.items.items(store, self.part)
                 if self.holdout is None or item["index"] % 2 != self.holdout]
        if self.labels is None:
            return [{"text": item["text"], "soft_label": float(item["label"])} for item in items]
        labels = self.labels.soft_labels(store)
        return [{"text": item["text"], "soft_label": float(labels[item["index"]])}
                for item in items if item["index"] in labels]

    def loss_fn(self):
        if self.loss is None:
            from w2s_jax.train import KLToTeacher

            return KLToTeacher(kind="cross_entropy")
        return self.loss.build(self.train.total_steps)

    def _train(self, res: Resources, directory: Path, log: TrainingLog | None = None):
        import jax.numpy as jnp

        import w2s_jax.train as train_module
        from w2s_jax.models import load_tokenizer
        from w2s_jax.models.classifier import load_classifier
        from w2s_jax.train.classification_data import ClassificationDataset

        res.pool.clear()  # the classifier and its optimizer need the memory inference models held
        cfg = self.train
        dtype = jnp.bfloat16 if cfg.lora_rank is not None and cfg.compute_dtype == "bfloat16" else jnp.float32
        model = load_classifier(self.base.path, num_classes=2, dtype=dtype, mesh=res.train_mesh, rules=res.rules)
        tokenizer = load_tokenizer(self.base.path)
        rows = self.rows(res.store)
        if len(rows) < cfg.batch_size:
            raise ValueError(f"{self.name}: {len(rows)} training items, fewer than train.batch_size "
                             f"{cfg.batch_size}")
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        data = ClassificationDataset(rows, tokenizer, max_len=cfg.max_len, pad_id=pad_id, seed=cfg.seed)
        callbacks = (log.on_step,) if log is not None else ()
        result = train_module.train(model, data, config=cfg, loss_fn=self.loss_fn(),
                                    checkpoint_dir=directory / "checkpoints",
                                    identity={"stage": self.slug, "key": self.key},
                                    show_progress=res.show_progress, mesh=res.train_mesh, rules=res.rules,
                                    callbacks=callbacks)
        res.memo = {k: v for k, v in res.memo.items() if not k.startswith("classifier:")}  # one in memory
        res.memo[f"classifier:{self.key}"] = (model, tokenizer)
        return result, len(rows)

    def execute(self, res: Resources, directory: Path) -> str:
        log = TrainingLog(directory)  # lr and real tokens come from train's callback metrics
        result, rows = self._train(res, directory, log)
        if res.process_index == 0:
            log.finish(result)
        losses = result.train_losses
        last = f", last loss {losses[max(losses)]:.4f}" if losses else ""
        return f"{result.step} steps on {rows} items of half {self.part.upper()}{last}"

    def classifier(self, res: Resources):
        """``(model, tokenizer)`` of the trained classifier (restored from its checkpoint if needed)."""
        if f"classifier:{self.key}" not in res.memo:
            self._train(res, res.store.directory(self))  # a finished checkpoint: restores, 0 steps
        return res.memo[f"classifier:{self.key}"]


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Probabilities(ChunkedStage):
    """A trained classifier's p(class 1) on every item of ``part`` (with ``holdout``, on the items
    of that parity only). Records ``{"index", "prob"}``."""

    classifier: FitClassifier
    part: str
    holdout: int | None = None
    batch_size: int = label_field(default=16)  # never changes a result

    @property
    def slug(self) -> str:
        return f"probs.{self.classifier.role}.{self.part}"

    def models(self) -> list[str]:
        return [self.classifier.base.path]

    def units(self, res):
        items = self.classifier.items.items(res.store, self.part)
        return [u for u, item in enumerate(items) if self.holdout is None or item["index"] % 2 == self.holdout]

    def execute(self, res, directory):
        self.classifier.classifier(res)  # restore before the chunks (collective on several processes)
        return super().execute(res, directory)

    def process(self, res, units):
        from w2s_jax.inference.features import classifier_probs

        items = self.classifier.items.items(res.store, self.part)
        model, tokenizer = self.classifier.classifier(res)
        probs_NxC = classifier_probs(model, tokenizer, [items[u]["text"] for u in units], batch_size=self.batch_size,
                                     max_len=self.classifier.train.max_len, mesh=res.mesh, show_progress=False)
        return [[{"index": items[u]["index"], "prob": float(p[1])}] for u, p in zip(units, probs_NxC)]

    def soft_labels(self, store) -> dict[int, float]:
        return {r["index"]: r["prob"] for r in self.records(store)}

    test_probs = soft_labels

    def summarize(self, records):
        return f"{len(records)} probabilities"


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class CrossLabels(Stage):
    """Labels of a whole part joined from classifiers that each labelled the half they did not
    train on (``Probabilities`` with ``holdout`` 0 and 1). Records ``{"index", "prob"}``."""

    halves: tuple[Probabilities, ...]

    @property
    def slug(self) -> str:
        return "cross-labels"

    def execute(self, res: Resources, directory: Path) -> str:
        import json

        from w2s_jax.pipeline.artifacts import atomic_write_text

        records = sorted((r for half in self.halves for r in half.records(res.store)), key=lambda r: r["index"])
        atomic_write_text(directory / "records.jsonl",
                          "".join(json.dumps({"index": r["index"], "prob": r["prob"]}) + "\n" for r in records))
        return f"{len(records)} labels from {len(self.halves)} halves"

    def soft_labels(self, store) -> dict[int, float]:
        return {r["index"]: r["prob"] for r in self.records(store)}
