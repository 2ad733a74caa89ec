"""Stages: hashed, resumable steps of a run, and the runner that walks them.

A stage is a small object with a ``name``, its ``inputs`` (other stages) and the ``settings`` it
depends on. Its key is the hash of its kind, its settings and its inputs' keys, and its directory
is ``<run>/stages/<name>-<key[:12]>``: a changed setting gives a new key, so that stage and every
stage after it are recomputed in new directories, while an unchanged one is found done. Nothing is
deleted: the directories of earlier settings stay where they are (the run directory is the user's
data), and a manifest in each says which settings made it and whether it finished.

:class:`ChunkedStage` is the common kind: its work is a list of units; it processes them in
chunks and appends each chunk's records to a JSONL part file (one per process), so a killed run
resumes at the last finished chunk; when all units are done the parts are merged in unit order
into ``records.jsonl``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
from tqdm.auto import tqdm

from w2s_jax.pipeline.artifacts import (
    JsonlLog,
    atomic_write_json,
    content_hash,
    merge_parts,
    part_path,
    process_share,
    read_json,
)

STAGE_FORMAT = 1  # bump when a stage's artifact format changes: every key changes with it
MANIFEST, RECORDS = "manifest.json", "records.jsonl"


class Stage(ABC):
    """One step of a run (see the module docstring)."""

    def __init__(self, name: str, inputs: Sequence["Stage"] = ()):
        self.name, self.inputs = name, tuple(inputs)
        self._key: str | None = None

    @abstractmethod
    def settings(self, run) -> dict[str, Any]:
        """Every value the stage's result depends on, besides its inputs (JSON-able)."""

    @abstractmethod
    def execute(self, run, directory: Path) -> str:
        """Does the work, writing artifacts under ``directory``; returns a one-line summary."""

    def key(self, run) -> str:
        """The stage's content key (memoised)."""
        if self._key is None:
            self._key = content_hash({"kind": type(self).__name__, "format": STAGE_FORMAT,
                                      "settings": self.settings(run),
                                      "inputs": [s.key(run) for s in self.inputs]})
        return self._key

    def directory(self, run) -> Path:
        """Where this stage's artifacts live."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name.replace("/", "."))
        return Path(run.run_dir) / "stages" / f"{safe}-{self.key(run)[:12]}"

    def manifest(self, run) -> dict | None:
        """The manifest on disk, or None."""
        path = self.directory(run) / MANIFEST
        return read_json(path) if path.is_file() else None

    def is_done(self, run) -> bool:
        """Finished with exactly these settings and inputs."""
        manifest = self.manifest(run)
        return bool(manifest and manifest.get("status") == "done" and manifest.get("key") == self.key(run))

    def records(self, run) -> list[dict]:
        """The stage's merged records (ChunkedStage and stages that write ``records.jsonl``)."""
        path = self.directory(run) / RECORDS
        if not path.is_file():
            raise FileNotFoundError(f"stage {self.name}: {path} does not exist (has the stage run?)")
        return JsonlLog(path).read()


class ChunkedStage(Stage):
    """A stage whose work is a list of units processed chunk by chunk into JSONL records."""

    @abstractmethod
    def units(self, run) -> list:
        """The units of work, in order (their positions are their identities)."""

    @abstractmethod
    def process(self, run, units: list, key) -> list[list[dict]]:
        """Records for each of ``units`` (one list per unit); ``key`` is the chunk's PRNG key
        (the stage's key folded with the chunk's first unit number, so every chunk draws
        independently and a resumed run draws what an uninterrupted one would)."""

    def unit_size(self, unit) -> int:
        """Rows in a unit, for chunking (default 1)."""
        return len(unit) if isinstance(unit, (tuple, list)) else 1

    def execute(self, run, directory: Path) -> str:
        units = self.units(run)
        share = process_share(len(units), run.process_index, run.process_count)
        log = JsonlLog(part_path(directory, run.process_index))
        done = {record["_unit"] for record in log.read()}
        todo = [u for u in share if u not in done]
        chunks, current, rows = [], [], 0
        for u in todo:
            current.append(u)
            rows += self.unit_size(units[u])
            if rows >= run.config.chunk_size:
                chunks.append(current)
                current, rows = [], 0
        if current:
            chunks.append(current)
        with tqdm(total=len(share), initial=len(share) - len(todo), desc=self.name, unit="unit",
                  disable=not run.show_progress, leave=False) as bar:
            for chunk in chunks:
                key = jax.random.fold_in(run.key(self.name), chunk[0])
                per_unit = self.process(run, [units[u] for u in chunk], key)
                log.append({**record, "_unit": u} for u, records in zip(chunk, per_unit) for record in records)
                bar.update(len(chunk))
        run.barrier(f"{self.name}-parts")
        parts = [part_path(directory, p) for p in range(run.process_count)]
        records = merge_parts(parts)
        if run.process_index == 0:
            _write_records(directory / RECORDS, records)
        run.barrier(f"{self.name}-merged")
        return self.summarize(records)

    def summarize(self, records: list[dict]) -> str:
        """The one-line summary (default: a count)."""
        return f"{len(records)} records"


def _write_records(path: Path, records: list[dict]) -> None:
    import json

    from w2s_jax.pipeline.artifacts import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def run_stages(stages: Sequence[Stage], run, *, log: Callable[[str], None] = print) -> None:
    """Runs each stage not yet done, in order (inputs must come before the stages that read them).

    Each finished stage's manifest records its name, key, settings, inputs and summary; a stage is
    marked "running" while it works, so an interrupted one is found and resumed, never reused.
    """
    for stage in stages:
        directory = stage.directory(run)
        if stage.is_done(run):
            log(f"[done] {stage.name}: {stage.manifest(run).get('summary', '')} (cached)")
            continue
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {"stage": stage.name, "kind": type(stage).__name__, "key": stage.key(run),
                    "settings": stage.settings(run),
                    "inputs": {s.name: s.key(run) for s in stage.inputs}, "status": "running",
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if run.process_index == 0:
            atomic_write_json(directory / MANIFEST, manifest)
        start = time.perf_counter()
        summary = stage.execute(run, directory)
        seconds = time.perf_counter() - start
        if run.process_index == 0:
            atomic_write_json(directory / MANIFEST, {**manifest, "status": "done", "summary": summary,
                                                     "seconds": round(seconds, 3)})
        log(f"[ran]  {stage.name}: {summary} ({seconds:.1f} s)")
