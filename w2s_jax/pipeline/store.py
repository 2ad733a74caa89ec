"""The content-addressed store: every stage's artifacts, found by the stage's key.

A stage with key ``k`` lives in ``<store>/<slug>-<k[:16]>/`` (the slug is a readable name made
from the stage's fields, e.g. ``labels.icl-refine``), with its ``manifest.json``, part files,
``records.jsonl`` and, for fine-tuning, ``checkpoints/``. The store is shared by every run and
every experiment kind: a stage asked for twice, by one run or by two, is computed once. Runs keep
their own directories for what people read (``w2s_jax.pipeline.runner``) and a list of the stage
keys they used. ``fingerprints/`` remembers file digests of models (``w2s_jax.pipeline.models``).

The default store is ``store/`` beside the run directory (``runs/store`` for ``runs/<name>``);
``w2s run --store DIR`` or the ``W2S_STORE`` environment variable put it elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from w2s_jax.pipeline.lock import StageLock
from w2s_jax.pipeline.refs import use_fingerprint_cache

STORE_ENV = "W2S_STORE"


def default_store(run_dir: str | Path) -> Path:
    """``$W2S_STORE`` if set, else ``store/`` beside the run directory."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    return Path(run_dir).absolute().parent / "store"


class Store:
    """A store directory (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        use_fingerprint_cache(self.root / "fingerprints")

    def directory(self, stage) -> Path:
        """Where ``stage``'s artifacts live."""
        return self.root / f"{stage.slug}-{stage.key[:16]}"

    def lock(self, stage, process_index: int = 0, *, wait: bool = True,
             log: Callable[[str], None] = print) -> StageLock:
        """The lock of ``stage`` for one process of a run (``w2s_jax.pipeline.lock``)."""
        return StageLock(self.directory(stage) / f"lock-{process_index:05d}", wait=wait, log=log)
