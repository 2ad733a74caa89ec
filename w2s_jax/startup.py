"""What an entry point does before JAX starts: keep freed host memory on CPU, cache compiled code.

Both settings must come first: glibc's malloc options only take for threads that have not yet
allocated (JAX's CPU client starts its threads on first use), and the persistent compilation
cache only serves programs compiled after it is on. The ``w2s`` commands call
:func:`prepare_jax` before any JAX work; a library user may call it first thing too.
"""

from __future__ import annotations

import os


def runs_on_cpu() -> bool:
    """Whether JAX will compute on the CPU, decided without starting JAX (which would fix it)."""
    platforms = os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_PLATFORM_NAME") or ""
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    import importlib.metadata
    import importlib.util

    # An accelerator needs a PJRT plugin (jax-cuda*-plugin, libtpu, ...); JAX finds them the same way.
    has_plugin = (bool(importlib.metadata.entry_points(group="jax_plugins"))
                  or importlib.util.find_spec("jax_plugins") is not None
                  or importlib.util.find_spec("libtpu") is not None)
    return not has_plugin


def prepare_jax() -> None:
    """On CPU keep freed host memory mapped (``w2s_jax.host_memory``), then turn the persistent
    compilation cache on (``w2s_jax.compilation_cache``). Call before any JAX computation."""
    from w2s_jax.models.backend import CPU  # imports jax, which starts no backend

    if runs_on_cpu() and CPU.host_memory:
        from w2s_jax.host_memory import reuse_freed_host_memory

        reuse_freed_host_memory()
    from w2s_jax.compilation_cache import enable_compilation_cache

    enable_compilation_cache()
