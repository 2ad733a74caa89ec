"""JAX's persistent compilation cache for w2s-jax entry points: compile once per machine.

A cold ``w2s score`` or ``python theory/simulate.py`` spends most of its time compiling XLA
programs that are the same from one run to the next. :func:`enable_compilation_cache` points
JAX's persistent cache at a per-user directory so a second run loads them from disk instead.

Where the cache lives (first match wins):

- ``W2S_COMPILATION_CACHE=off`` (or ``0``, ``false``, ``no``, empty): no persistent cache;
- ``W2S_COMPILATION_CACHE=/some/dir``: that directory;
- otherwise ``$XDG_CACHE_HOME/w2s-jax/jax`` (``~/.cache/w2s-jax/jax`` when ``XDG_CACHE_HOME`` is
  unset).

Entry points (the ``w2s`` CLI, ``theory/simulate.py``, the benchmarks) call it first thing; a
library user opts in by calling it. Every compiled program is cached, however fast it compiled:
the entry points' programs are small and many, and each one skipped is a few hundred ms saved.
A cache that cannot be created (a read-only home) is skipped with a warning, never an error: it
only ever costs speed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

ENV_VAR = "W2S_COMPILATION_CACHE"
_OFF = {"", "0", "off", "false", "no", "none"}


def cache_dir() -> Path | None:
    """The directory the cache would use, or None when ``W2S_COMPILATION_CACHE`` turns it off."""
    value = os.environ.get(ENV_VAR)
    if value is not None:
        if value.strip().lower() in _OFF:
            return None
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "w2s-jax" / "jax"


def enable_compilation_cache() -> Path | None:
    """Turns on JAX's persistent compilation cache; returns its directory (None: off or unusable).

    Call before the first compilation. Safe to call more than once.
    """
    directory = cache_dir()
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        warnings.warn(f"compilation cache disabled: cannot create {directory} ({error})", stacklevel=2)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
