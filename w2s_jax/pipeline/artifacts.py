"""A run directory's files: atomic writes, append-only JSONL logs, content hashes, part files.

Nothing here leaves a half-written file behind: whole files are written to a temporary name in the
same directory, flushed, fsync'ed and renamed over the target; a JSONL log is appended one flushed
and fsync'ed chunk at a time, and a line cut short by a kill is dropped when the log is reopened.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from w2s_jax.atomic_write import atomic_write_bytes, atomic_write_text

__all__ = ["JsonlLog", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "content_hash",
           "merge_parts", "part_path", "process_share", "read_json"]


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__class__": type(obj).__name__,
                **{f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "name") and hasattr(obj, "options"):  # a task or method strategy object
        return {"name": obj.name, "options": _jsonable(obj.options)}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON atomically (dataclasses and numpy values converted)."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON document at ``path``; a corrupt file is an error naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def content_hash(obj: Any) -> str:
    """sha256 of a canonical JSON form of ``obj`` (dicts sorted by key)."""
    text = json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


class JsonlLog:
    """An append-only JSONL file written chunk by chunk; survives a kill at any point."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict]:
        """Every complete record; an incomplete last line (a kill mid-write) is cut off the file."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a partial line from an interrupted append
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
            data = data[:end]
        records = []
        for number, line in enumerate(data.splitlines(), start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}: line {number} is not valid JSON ({error})") from None
        return records

    def complete(self) -> list[dict]:
        """Every complete record, leaving the file as it is (it may be another process's, being
        appended to now): an incomplete last line is skipped."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        return [json.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines()]

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Appends records as one flushed, fsync'ed write."""
        text = "".join(json.dumps(_jsonable(r)) + "\n" for r in records)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def process_share(num_units: int, process_index: int, process_count: int) -> range:
    """The contiguous block of unit numbers that process ``process_index`` of ``process_count``
    works on: blocks differ in size by at most one and cover ``0..num_units-1`` in order."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    base, extra = divmod(num_units, process_count)
    start = process_index * base + min(process_index, extra)
    return range(start, start + base + (1 if process_index < extra else 0))


def part_path(directory: str | Path, process_index: int) -> Path:
    """The JSONL part file of one process in a stage directory."""
    return Path(directory) / f"part-{process_index:05d}.jsonl"


def merge_parts(paths: Sequence[str | Path], *, key: str = "_unit") -> list[dict]:
    """The records of every part file in unit order (by ``key``; a unit's records in the order
    written). A unit found in several parts (written by runs with different process counts, each
    computing it the same) is taken from the first part that has it."""
    chosen: dict = {}
    for path in paths:
        found: dict = {}
        for record in JsonlLog(path).complete():
            found.setdefault(record[key], []).append(record)
        for unit, records in found.items():
            chosen.setdefault(unit, records)
    return [r for unit in sorted(chosen) for r in chosen[unit]]
