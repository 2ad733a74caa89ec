"""What a stage reads from outside the store, as values with a content identity.

A stage's key hashes its fields; a field that names something on disk enters the key through its
``identity()``, which is what the thing holds, never where it is:

- :class:`Model`: a checkpoint, identified by :func:`~w2s_jax.pipeline.models.model_fingerprint`
  (every file's bytes), or, for a model another stage writes, by that stage's key;
- :class:`LabelFile`: a file of weak labels, by its bytes;
- :class:`Split`: validated examples of one data split, by their contents (index, question,
  answer and the raw row, which tasks may read).

Fields marked ``label=True`` in their metadata are names for people (a supervisor's short name)
and stay out of every key; a field made with :func:`~w2s_jax.added_fields.added_field` (of a stage,
or of a method's or task's options) stays out while it has its default.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from w2s_jax.added_fields import is_left_out
from w2s_jax.inference.generation_settings import Generation
from w2s_jax.tasks.base import Example

LABEL = {"label": True}  # dataclasses.field(metadata=LABEL): a name for people, not hashed

_fingerprints: dict[str, str] = {}  # model path -> fingerprint, for this process
_cache: list[Path] = []  # where file digests are remembered (the store's fingerprints/)


def label_field(**kwargs):
    """A dataclass field that is a name for people and enters no key."""
    return dataclasses.field(metadata=LABEL, **kwargs)


@dataclasses.dataclass(frozen=True)
class Model:
    """A checkpoint: a directory or hub name. ``made_by`` is the key of the stage that writes it
    (its identity is then that key and the directory's name, known before the files exist); else
    its files' fingerprint."""

    path: str = label_field()
    made_by: str | None = None

    def identity(self) -> str:
        if self.made_by is not None:
            return f"stage:{self.made_by}:{Path(self.path).name}"
        if self.path not in _fingerprints:
            from w2s_jax.pipeline.models import model_fingerprint

            _fingerprints[self.path] = model_fingerprint(self.path, _cache[-1] if _cache else None)
        return _fingerprints[self.path]


def use_fingerprint_cache(directory: str | Path | None) -> None:
    """Remembers file digests in ``directory`` from now on, and forgets this process's
    fingerprints (the next key reads every file's stamp again)."""
    _fingerprints.clear()
    _cache[:] = [Path(directory)] if directory is not None else []


@dataclasses.dataclass(frozen=True)
class LabelFile:
    """A file of weak labels, rows ``{"split", "index", "answer"}``."""

    path: str = label_field()
    made_by: str | None = None  # the key of the stage that writes it (then its identity)

    def identity(self) -> str:
        if self.made_by is not None:
            return f"stage:{self.made_by}:{Path(self.path).name}"
        return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """The validated examples of one split. ``load`` (for a split another stage writes) reads them
    when first needed; ``made_by`` is then that stage's key and the split's identity."""

    which: str = label_field()  # "train" or "test"
    rows: tuple[Example, ...] | None = label_field(default=None, repr=False)
    load: Callable[[], list[Example]] | None = label_field(default=None, repr=False)
    made_by: str | None = None

    @functools.cached_property
    def examples(self) -> tuple[Example, ...]:
        if self.rows is not None:
            return tuple(self.rows)
        if self.load is None:
            raise ValueError(f"the {self.which} split has no examples")
        return tuple(self.load())

    def identity(self) -> str:
        if self.made_by is not None:
            return f"stage:{self.made_by}:{self.which}"
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:
        from w2s_jax.pipeline.artifacts import content_hash

        return content_hash([(e.index, e.question, e.answer, dict(e.fields)) for e in self.examples])


@dataclasses.dataclass(frozen=True)
class Supervisor:
    """A weak supervisor: a model, or a file of labels (rows ``{"split", "index", "answer"}``)."""

    name: str = label_field()  # short, unique in the run: "w0-qwen2.5-0.5b-instruct"
    model: Model | None = None
    label_file: LabelFile | None = None


@dataclasses.dataclass(frozen=True)
class Inference:
    """How a model answers: sampling settings, chat template, compute dtype and the run's seed
    (batch sizes and streams are not here: they never change a result)."""

    generation: Generation
    chat: bool = False
    dtype: str = "float32"
    seed: int = 0


def canonical(value: Any) -> Any:
    """The JSON-able form of a stage field that its key hashes (see the module docstring)."""
    if hasattr(value, "key") and hasattr(value, "execute"):  # a stage: by its key
        return {"stage": value.key}
    if hasattr(value, "identity"):
        return {type(value).__name__: value.identity()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__class__": type(value).__name__,
                **{f.name: canonical(getattr(value, f.name))
                   for f in dataclasses.fields(value) if not f.metadata.get("label")
                   and not is_left_out(f, getattr(value, f.name))}}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if hasattr(value, "name") and hasattr(value, "options"):  # a task or method strategy object
        return {"name": value.name, "options": canonical(value.options)}
    from w2s_jax.pipeline.artifacts import _jsonable

    return _jsonable(value)
