"""Compile the programs of one stage side by side, before the first of them runs.

JAX compiles a jitted function at its first call, so a stage made of two programs, where the
second takes the first's output (generation's prefill, then its decode loop), compiles them one
after the other. XLA compiles each on one thread for most of its work, so on a machine with two
or more cores the two can compile at once: :func:`compile_side_by_side` lowers them (tracing
holds the GIL, so that part stays in order; the second is lowered from the first's output
shapes, ``Lowered.out_info``) and compiles each ``Lowered`` in a thread of its own. The jitted
functions' own caches then hold the executables, so the calls that follow compile nothing.

The first generate call of a shape then waits less (docs/benchmarks.md). It needs freed host memory to be per thread:
``host_memory.reuse_freed_host_memory`` no longer forces one malloc arena, under which the two
compilations took longer together than in turn.

Each stage's key (the programs' argument shapes, dtypes and static settings: what JAX's own
cache keys on) is compiled ahead once per process; a stage already compiled skips the lowering.
Batches generating on threads of their own (`streams.py`) may reach a new key at once: the first
compiles it, the others wait for it and compile nothing.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Hashable, Sequence

import jax

_MAX_KEYS = 256  # stages remembered (a key holds shapes and static settings: a few KB)
_lock = threading.Lock()
_compiled: dict[Hashable, threading.Event] = {}  # key -> set once its programs are compiled


def signature(tree) -> Hashable:
    """What a jitted call's cache keys on for ``tree``'s arrays: structure, shapes, dtypes, weak
    types and placements; other leaves (static settings) as they are."""
    leaves, treedef = jax.tree.flatten(tree)

    def leaf_key(x):
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return (tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False)),
                    getattr(x, "sharding", None))
        return x

    return treedef, tuple(leaf_key(x) for x in leaves)


def compile_side_by_side(key: Hashable, lower: Callable[[], Sequence[jax.stages.Lowered]]) -> None:
    """Compiles the programs ``lower()`` returns, each in a thread, once per ``key``.

    ``lower`` runs only for a key not seen before in this process; errors in compiling are
    raised here, as the first call would have raised them.
    """
    with _lock:
        done = _compiled.get(key)
        owner = done is None
        if owner:
            if len(_compiled) >= _MAX_KEYS:
                for finished in [k for k, event in _compiled.items() if event.is_set()]:
                    del _compiled[finished]
            done = _compiled[key] = threading.Event()
    if not owner:
        done.wait()
        return
    try:
        lowered = list(lower())
        if len(lowered) == 1:
            lowered[0].compile()
        elif lowered:
            with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
                for future in [pool.submit(program.compile) for program in lowered]:
                    future.result()
    except BaseException:
        with _lock:  # not compiled: a later call (and any waiting one) compiles at its own call
            del _compiled[key]
        raise
    finally:
        done.set()

