"""The data stage: a seed's balanced items, split into half A, half B and the test split.

Half A trains the weak model; the weak model labels half B, on which the students (and the strong
ceiling, on B's gold labels) are trained; every model is evaluated on the test split. Each seed
draws its own items, balance and halves, so intervals over seeds include the data draw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from w2s_jax.classify.datasets import Format, balance, to_items
from w2s_jax.pipeline import Resources, Stage
from w2s_jax.pipeline.artifacts import atomic_write_json, atomic_write_text, read_json
from w2s_jax.pipeline.refs import label_field

PARTS = ("a", "b", "test")


@dataclasses.dataclass(frozen=True)
class Source:
    """A data file (identified by its bytes) or a Hub dataset split (by its name)."""

    path: str = label_field()
    split: str = "train"  # the split inside a Hub dataset
    hub_config: str | None = None
    made_by: str | None = None  # the key of the stage that writes the file (then its identity)

    def is_local(self) -> bool:
        from w2s_jax.tasks.data import is_local

        return is_local(self.path)

    def identity(self) -> str:
        if self.made_by is not None:
            return f"stage:{self.made_by}:{Path(self.path).name}"
        if self.is_local():
            path = Path(self.path).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{self.path}: data file not found")
            return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        return f"hub:{self.path}:{self.hub_config}:{self.split}"

    def rows(self, limit: int) -> list[dict]:
        from w2s_jax.tasks.data import load_rows

        return load_rows(self.path, split=self.split, hub_config=self.hub_config, limit=limit or None)


def draw(items: list[dict], n: int, *, seed: int, salt: int) -> list[dict]:
    """``items`` in a seeded random order, the first ``n`` (0: all)."""
    order = np.random.default_rng([seed, salt]).permutation(len(items))
    return [items[i] for i in order[: n or len(items)]]


def read_items(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Items(Stage):
    """A seed's items ``{"index", "row", "text", "label"}`` of half A, half B and the test split
    (``a.jsonl``, ``b.jsonl``, ``test.jsonl``; ``index`` is the item's position in its part)."""

    format: Format
    train: Source
    test: Source
    max_rows: int = 0
    n_train: int = 0
    n_test: int = 0
    weak_fraction: float = 0.5
    seed: int
    data: Stage | None = None  # the stage that writes the source files, if one does

    @property
    def slug(self) -> str:
        return f"items.{self.format.name}"

    def items(self, store, part: str) -> list[dict]:
        """The items of ``part`` ("a", "b" or "test")."""
        return read_items(store.directory(self) / f"{part}.jsonl")

    def parts(self) -> tuple[dict[str, list[dict]], dict[str, int]]:
        """The items of each part, and how many balanced items each source gave (reads the
        sources; writes nothing). Errors name the source, the row and the field."""
        drawn, counts = {}, {}
        for which, source, n in (("train", self.train, self.n_train), ("test", self.test, self.n_test)):
            rows = source.rows(self.max_rows)
            if not rows:
                raise ValueError(f"{source.path}: no rows")
            items = balance(to_items(self.format, rows, seed=self.seed, split=which, source=source.path),
                            seed=self.seed + (which == "test"))
            if n and n > len(items):
                raise ValueError(f"{source.path}: {n} balanced items asked for (task.n_{which}), but "
                                 f"only {len(items)} can be made")
            drawn[which] = draw(items, n, seed=self.seed, salt=3 + (which == "test"))
            counts[which] = len(items)
        train, test = drawn["train"], drawn["test"]
        overlap = {item["text"].strip() for item in train} & {item["text"].strip() for item in test}
        if overlap:
            raise ValueError(f"{self.test.path}: {len(overlap)} test item(s) are also training items, e.g. "
                             f"{sorted(overlap)[0][:80]!r}")
        cut = int(round(len(train) * self.weak_fraction))
        if not 2 <= cut <= len(train) - 2:
            raise ValueError(f"{len(train)} training items cannot be cut into halves of 2 or more "
                             f"(weak_fraction {self.weak_fraction})")
        return {"a": train[:cut], "b": train[cut:], "test": test}, counts

    def execute(self, res: Resources, directory: Path) -> str:
        split, counts = self.parts()
        for part, items in split.items():
            text = "".join(json.dumps({"index": i, **item}) + "\n" for i, item in enumerate(items))
            atomic_write_text(directory / f"{part}.jsonl", text)
        summary = {part: {"items": len(items), "positive": sum(item["label"] for item in items)}
                   for part, items in split.items()}
        atomic_write_json(directory / "items.json", {"parts": summary, "balanced": counts})
        return ", ".join(f"{part} {s['items']} ({s['positive']} positive)" for part, s in summary.items())

    def summary(self, store) -> dict:
        return read_json(store.directory(self) / "items.json")
