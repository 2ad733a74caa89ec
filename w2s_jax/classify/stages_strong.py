"""What the strong model does without fine-tuning: cached features and the probes fitted on them,
zero-shot answers, and the in-context refinement of weak labels.

- :class:`Features`: the final-norm hidden state of each item's last token (half B and the test
  split), extracted once, batched, and kept as ``features-<part>.npy``; every probe reads them.
- :class:`ProbeLabels`: a probe (``w2s_jax.core.probes``) fitted on half B's features with the
  weak labels: its p(class 1) on the test split (the probe as a classifier) and the repaired labels
  of half B (``relabel``: the probe's probabilities; ``filter``: the weak labels of the items it
  keeps).
- :class:`ZeroShot`: p(class 1) from the strong model's next-token probabilities of the two answer
  texts after the task's question.
- :class:`ICLRefine`: each half-B item asked with ``demos`` other half-B items as demonstrations,
  answered by their weak labels (drawn from the item's own generator); the probability of the
  "yes" answer is the refined soft label.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from w2s_jax.classify.config import RepairChoice
from w2s_jax.classify.datasets import Format
from w2s_jax.classify.stages_data import Items
from w2s_jax.pipeline import ChunkedStage, Resources, Stage
from w2s_jax.pipeline.artifacts import JsonlLog, atomic_write_bytes, atomic_write_text
from w2s_jax.pipeline.refs import Model, label_field

FEATURE_PARTS = ("b", "test")


def strong_model(res: Resources, base: Model, dtype: str):
    """``(model, tokenizer)`` of an inference copy of ``base`` from the run's pool (a trained
    classifier kept in memory is let go first: a 7B classifier and a 7B decoder rarely fit together)."""
    res.memo = {k: v for k, v in res.memo.items() if not k.startswith("classifier:")}
    engine = res.pool.engine(base.path, chat=False, dtype=dtype)
    return engine.model, engine.tokenizer


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Features(Stage):
    """``features-b.npy`` and ``features-test.npy``: N x D float32 last-token features."""

    base: Model
    items: Items
    max_len: int
    dtype: str = "float32"
    batch_size: int = label_field(default=16)

    @property
    def slug(self) -> str:
        return "features"

    def models(self) -> list[str]:
        return [self.base.path]

    def features(self, store, part: str) -> np.ndarray:
        return np.load(store.directory(self) / f"features-{part}.npy")

    def execute(self, res: Resources, directory: Path) -> str:
        from w2s_jax.inference.features import last_token_features

        model, tokenizer = strong_model(res, self.base, self.dtype)
        shapes = []
        for part in FEATURE_PARTS:
            texts = [item["text"] for item in self.items.items(res.store, part)]
            X_NxD = np.asarray(last_token_features(model, tokenizer, texts, batch_size=self.batch_size,
                                                   max_len=self.max_len, mesh=res.mesh,
                                                   show_progress=res.show_progress), np.float32)
            buffer = io.BytesIO()
            np.save(buffer, X_NxD)
            atomic_write_bytes(directory / f"features-{part}.npy", buffer.getvalue())
            shapes.append(f"{part} {X_NxD.shape[0]} x {X_NxD.shape[1]}")
        return "features " + ", ".join(shapes)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class ProbeLabels(Stage):
    """A probe fitted on half B's features with ``weak``'s labels: ``records.jsonl`` holds half B's
    repaired labels ``{"index", "prob"}`` (only the kept items for a filter), ``test.jsonl`` the
    probe's p(class 1) on the test split."""

    features: Features
    weak: Stage  # soft labels of half B
    repair: RepairChoice

    @property
    def slug(self) -> str:
        return f"probe.{self.repair.probe}.{self.repair.mode}"

    def execute(self, res: Resources, directory: Path) -> str:
        from w2s_jax.core.label_repair import filter_by_probe, relabel

        store = res.store
        items = self.features.items.items(store, "b")
        weak = self.weak.soft_labels(store)
        y_N = np.asarray([weak[item["index"]] for item in items], np.float64)
        X_NxD = self.features.features(store, "b")
        probe, options = self.repair.make_probe(), dict(self.repair.repair_options)
        if self.repair.mode == "relabel":  # out-of-fold predictions: an item never labels itself
            repaired = np.asarray(relabel(probe, X_NxD, y_N, key=self.prng(), **options), np.float64)
            rows = [{"index": item["index"], "prob": float(p)} for item, p in zip(items, repaired)]
        else:
            kept = np.asarray(filter_by_probe(probe, X_NxD, y_N, key=self.prng(), **options)).astype(int)
            rows = [{"index": items[i]["index"], "prob": float(y_N[i])} for i in sorted(kept.tolist())]
        fitted = probe.fit(X_NxD, y_N)  # on every item: the probe as a classifier of the test split
        test_items = self.features.items.items(store, "test")
        test = np.asarray(fitted.predict_proba(self.features.features(store, "test")), np.float64)
        for path, records in (("records.jsonl", rows),
                              ("test.jsonl", [{"index": item["index"], "prob": float(p)}
                                              for item, p in zip(test_items, test)])):
            atomic_write_text(directory / path, "".join(json.dumps(r) + "\n" for r in records))
        agree = np.mean([(r["prob"] > 0.5) == (weak[r["index"]] > 0.5) for r in rows]) if rows else float("nan")
        return f"{self.repair.mode}: {len(rows)} of {len(items)} labels kept, {agree:.2f} agree with the weak labels"

    def soft_labels(self, store) -> dict[int, float]:
        return {r["index"]: r["prob"] for r in self.records(store)}

    def test_probs(self, store) -> dict[int, float]:
        return {r["index"]: r["prob"] for r in JsonlLog(store.directory(self) / "test.jsonl").read()}


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class ZeroShot(ChunkedStage):
    """The strong model's p(class 1) on the test split, asked the task's question zero-shot.
    Records ``{"index", "prob"}``."""

    base: Model
    items: Items
    format: Format
    dtype: str = "float32"
    batch_size: int = label_field(default=16)

    @property
    def slug(self) -> str:
        return "zero-shot"

    def models(self) -> list[str]:
        return [self.base.path]

    def units(self, res):
        return list(range(len(self.items.items(res.store, "test"))))

    def process(self, res, units):
        from w2s_jax.inference.binary import label_token_probs

        items = self.items.items(res.store, "test")
        model, tokenizer = strong_model(res, self.base, self.dtype)
        probs = label_token_probs(model, tokenizer, [self.format.prompt(items[u]["text"]) for u in units],
                                  label_texts=self.format.answers, batch_size=self.batch_size, mesh=res.mesh,
                                  show_progress=False)
        return [[{"index": items[u]["index"], "prob": float(p[1])}] for u, p in zip(units, np.asarray(probs))]

    def test_probs(self, store) -> dict[int, float]:
        return {r["index"]: r["prob"] for r in self.records(store)}

    def summarize(self, records):
        return f"{len(records)} zero-shot probabilities"


def demonstrations(stage_key: str, index: int, pool: int, demos: int) -> list[int]:
    """The ``demos`` half-B positions shown before item ``index`` (never itself), drawn from the
    item's own generator (so chunking changes nothing)."""
    rng = np.random.default_rng([int(stage_key[:8], 16), index])
    others = [i for i in range(pool) if i != index]
    return [others[i] for i in rng.choice(len(others), size=min(demos, len(others)), replace=False)]


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class ICLRefine(ChunkedStage):
    """Half B's weak labels refined in context by the strong model. Records ``{"index", "prob",
    "demos"}``: the refined p(class 1) and the positions of the demonstrations it saw."""

    base: Model
    items: Items
    weak: Stage  # soft labels of half B
    format: Format
    demos: int
    dtype: str = "float32"
    batch_size: int = label_field(default=16)

    @property
    def slug(self) -> str:
        return "icl-refine"

    def models(self) -> list[str]:
        return [self.base.path]

    def units(self, res):
        return list(range(len(self.items.items(res.store, "b"))))

    def process(self, res, units):
        from w2s_jax.inference.binary import label_token_probs

        items = self.items.items(res.store, "b")
        weak = self.weak.soft_labels(res.store)
        prompts, shown = [], []
        for u in units:
            demos = demonstrations(self.key, u, len(items), self.demos)
            context = "".join(self.format.demonstration(items[d]["text"], int(weak[items[d]["index"]] > 0.5))
                              for d in demos)
            prompts.append(context + self.format.prompt(items[u]["text"]))
            shown.append(demos)
        model, tokenizer = strong_model(res, self.base, self.dtype)
        probs = label_token_probs(model, tokenizer, prompts, label_texts=self.format.answers,
                                  batch_size=self.batch_size, mesh=res.mesh,
                                  show_progress=False)
        return [[{"index": items[u]["index"], "prob": float(p[1]), "demos": d}]
                for u, p, d in zip(units, np.asarray(probs), shown)]

    def soft_labels(self, store) -> dict[int, float]:
        return {r["index"]: r["prob"] for r in self.records(store)}

    def summarize(self, records):
        return f"{len(records)} refined labels"
