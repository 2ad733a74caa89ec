"""Stages: hashed, resumable steps, as values; and the runner that walks a graph of them.

A stage is a frozen dataclass whose fields are exactly its settings and its input stages. Its key
is the hash of its type, a format number and those fields (input stages by their keys, models,
label files and data splits by their contents: ``w2s_jax.pipeline.refs``), so what a stage reads
is what is hashed, by construction. It runs given resources only (:class:`Resources`: the model
pool, the meshes, the store, the processes; its PRNG key is derived from its own key), and its
artifacts live in the store under its key (``w2s_jax.pipeline.store``): a changed setting gives a
new key, so that stage and every stage after it are computed in new directories, while an
unchanged one is found done, whichever run asks for it. Nothing is deleted.

:class:`ChunkedStage` is the common kind: its work is a list of units; it processes them in
chunks of ``chunk_size`` rows and appends each chunk's records to a JSONL part file (one per
process), so a killed run resumes at the last finished chunk; when all units are done the parts
are merged in unit order into ``records.jsonl``. Chunking never changes a record: every sampled
row draws from ``fold_in(stage PRNG key, example id)``, whatever chunk it is in.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from tqdm.auto import tqdm

from w2s_jax.added_fields import is_left_out
from w2s_jax.pipeline.artifacts import (
    JsonlLog,
    atomic_write_json,
    atomic_write_text,
    content_hash,
    merge_parts,
    part_path,
    process_share,
    read_json,
)
from w2s_jax.pipeline.refs import canonical, label_field

MANIFEST, RECORDS = "manifest.json", "records.jsonl"


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Stage(ABC):
    """One step of a run (see the module docstring). ``name`` says which step it is to people
    ("labels/naive/w0-qwen") and is not hashed; every other field is."""

    FORMAT: ClassVar[int] = 1  # bump when the stage's artifact format changes: its key changes
    name: str = label_field()

    @property
    def slug(self) -> str:
        """A readable name made from hashed fields only (the store directory's prefix)."""
        return type(self).__name__.lower()

    def fields(self) -> dict:
        """The hashed fields, in canonical JSON-able form (input stages by their keys); an
        :func:`~w2s_jax.added_fields.added_field` at its default is left out."""
        return {f.name: canonical(getattr(self, f.name)) for f in dataclasses.fields(self)
                if not f.metadata.get("label")
                and not is_left_out(f, getattr(self, f.name))}

    @functools.cached_property
    def key(self) -> str:
        """The stage's content key."""
        return content_hash({"kind": type(self).__name__, "format": self.FORMAT, "fields": self.fields()})

    def inputs(self) -> list["Stage"]:
        """The stages among the fields (in tuples and dicts too), in field order."""
        found: list[Stage] = []

        def visit(value):
            if isinstance(value, Stage):
                found.append(value)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    visit(v)
            elif isinstance(value, dict):
                for v in value.values():
                    visit(v)

        for f in dataclasses.fields(self):
            visit(getattr(self, f.name))
        return found

    def prng(self):
        """The stage's PRNG key, derived from its key (so the seed, which is a field of every
        stage that samples, and every other setting enter it)."""
        import jax

        return jax.random.key(int(self.key[:8], 16))

    @abstractmethod
    def execute(self, res: "Resources", directory: Path) -> str:
        """Does the work, writing artifacts under ``directory``; returns a one-line summary."""

    def models(self) -> list[str]:
        """The checkpoints this stage loads when it runs (for ``--dry-run``)."""
        return []

    def manifest(self, store) -> dict | None:
        """The manifest on disk, or None."""
        path = store.directory(self) / MANIFEST
        return read_json(path) if path.is_file() else None

    def is_done(self, store) -> bool:
        """Finished with exactly these fields."""
        manifest = self.manifest(store)
        return bool(manifest and manifest.get("status") == "done" and manifest.get("key") == self.key)

    def progress(self, store) -> tuple[int, int] | None:
        """(units done, units) of an unfinished stage that counts units, else None."""
        return None

    def records(self, store) -> list[dict]:
        """The stage's merged records (ChunkedStage and stages that write ``records.jsonl``)."""
        path = store.directory(self) / RECORDS
        if not path.is_file():
            raise FileNotFoundError(f"stage {self.name}: {path} does not exist (has the stage run?)")
        return JsonlLog(path).read()


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class ChunkedStage(Stage):
    """A stage whose work is a list of units processed chunk by chunk into JSONL records."""

    @abstractmethod
    def units(self, res: "Resources") -> list:
        """The units of work, in order (their positions are their identities)."""

    @abstractmethod
    def process(self, res: "Resources", units: list) -> list[list[dict]]:
        """Records for each of ``units`` (one list per unit). Sampling draws per example from
        ``fold_in(self.prng(), example index)``, so the chunk a unit falls in changes nothing."""

    def unit_size(self, unit) -> int:
        """Rows in a unit, for chunking (default 1)."""
        return len(unit) if isinstance(unit, (tuple, list)) else 1

    def progress(self, store) -> tuple[int, int] | None:
        directory = store.directory(self)
        done = {r["_unit"] for p in sorted(directory.glob("part-*.jsonl")) for r in JsonlLog(p).read()}
        manifest = self.manifest(store) or {}
        return (len(done), manifest["units"]) if "units" in manifest else None

    def execute(self, res: "Resources", directory: Path) -> str:
        units = self.units(res)
        if res.process_index == 0:
            path = directory / MANIFEST
            atomic_write_json(path, {**read_json(path), "units": len(units)})
        share = process_share(len(units), res.process_index, res.process_count)
        log = JsonlLog(part_path(directory, res.process_index))
        done = {record["_unit"] for record in log.read()}
        # units of this share that a run with another process count wrote into other parts
        done |= {r["_unit"] for p in directory.glob("part-*.jsonl") if p != log.path
                 for r in JsonlLog(p).complete()}
        todo = [u for u in share if u not in done]
        chunks, current, rows = [], [], 0
        for u in todo:
            current.append(u)
            rows += self.unit_size(units[u])
            if rows >= res.chunk_size:
                chunks.append(current)
                current, rows = [], 0
        if current:
            chunks.append(current)
        with tqdm(total=len(share), initial=len(share) - len(todo), desc=self.name, unit="unit",
                  disable=not res.show_progress, leave=False) as bar:
            for chunk in chunks:
                per_unit = self.process(res, [units[u] for u in chunk])
                log.append({**record, "_unit": u} for u, records in zip(chunk, per_unit) for record in records)
                bar.update(len(chunk))
        res.barrier(f"{self.key[:16]}-parts")
        records = merge_parts(sorted(directory.glob("part-*.jsonl")))
        if res.process_index == 0:
            atomic_write_text(directory / RECORDS, "".join(json.dumps(r) + "\n" for r in records))
        res.barrier(f"{self.key[:16]}-merged")
        return self.summarize(records)

    def summarize(self, records: list[dict]) -> str:
        """The one-line summary (default: a count)."""
        return f"{len(records)} records"


class Resources:
    """What a stage runs with besides its own fields: the store, the model pool, the meshes and
    the processes; and how work is cut (``chunk_size``), which changes no result.

    Arguments:
      store: the :class:`~w2s_jax.pipeline.store.Store`.
      pool: the :class:`~w2s_jax.pipeline.models.ModelPool` of inference models.
      chunk_size: rows per appended chunk of a chunked stage.
      mesh, train_mesh, rules: inference mesh (this process's devices), fine-tuning mesh (every
        device) and sharding rules; None on one device.
      show_progress: draw progress bars.
    """

    def __init__(self, store, pool, *, chunk_size: int = 64, mesh=None, train_mesh=None, rules=None,
                 show_progress: bool = True):
        import jax

        self.store, self.pool, self.chunk_size = store, pool, chunk_size
        self.mesh, self.train_mesh, self.rules, self.show_progress = mesh, train_mesh, rules, show_progress
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        # built from stages once per process: method contexts ("context:<key>"), students in memory
        # ("student:<key>")
        self.memo: dict[str, object] = {}

    def barrier(self, name: str) -> None:
        """Waits for every process (a no-op on one process)."""
        if self.process_count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


def graph_order(stages: Sequence[Stage]) -> list[Stage]:
    """``stages`` and every stage they read, each once (by key), inputs before readers, else in
    the given order."""
    ordered, seen = [], set()

    def visit(stage: Stage):
        if stage.key in seen:
            return
        for parent in stage.inputs():
            visit(parent)
        seen.add(stage.key)
        ordered.append(stage)

    for stage in stages:
        visit(stage)
    return ordered


def run_stages(stages: Sequence[Stage], res: Resources, *, log: Callable[[str], None] = print,
               executed: list | None = None) -> None:
    """Runs each stage not yet done, inputs first, each once by key.

    Before working on a stage, the process takes the stage's lock (``w2s_jax.pipeline.lock``): a
    second process on the same stage waits for the first and then finds it done. A stage is marked
    "running" in its manifest while it works, so an interrupted one is found and resumed, never
    reused. ``executed`` (if given) collects the stages this call computed.
    """
    store = res.store
    for stage in graph_order(stages):
        if stage.is_done(store):
            log(f"[done] {stage.name}: {stage.manifest(store).get('summary', '')} (cached)")
            continue
        directory = store.directory(stage)
        with store.lock(stage, res.process_index, log=log):
            if stage.is_done(store):  # another process finished it while we waited
                log(f"[done] {stage.name}: {stage.manifest(store).get('summary', '')} (cached)")
                continue
            manifest = {"stage": stage.name, "kind": type(stage).__name__, "key": stage.key,
                        "fields": stage.fields(), "inputs": {s.name: s.key for s in stage.inputs()},
                        "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            old = stage.manifest(store) or {}
            if "units" in old:
                manifest["units"] = old["units"]
            if res.process_index == 0:
                atomic_write_json(directory / MANIFEST, manifest)
            start = time.perf_counter()
            summary = stage.execute(res, directory)
            seconds = time.perf_counter() - start
            if res.process_index == 0:
                atomic_write_json(directory / MANIFEST, {**read_json(directory / MANIFEST), "status": "done",
                                                         "summary": summary, "seconds": round(seconds, 3)})
            res.barrier(f"{stage.key[:16]}-done")  # every process sees it done before the next stage
        if executed is not None:
            executed.append(stage)
        log(f"[ran]  {stage.name}: {summary} ({seconds:.1f} s)")
