"""Host memory for XLA:CPU: keep freed pages mapped so each compiled step does not fault them anew.

XLA:CPU allocates one scratch buffer per run of a compiled program (154 MB for the train step of
``benchmarks/lm_bench.py --preset small``). glibc serves a request that large with a fresh
``mmap`` and returns it to the kernel on free, so every step touches every page for the first
time again: about 38K minor page faults, ~45 ms of a ~275 ms step on one core. PyTorch's
per-tensor buffers are smaller and mostly come back from the heap, so it does not pay this.

:func:`reuse_freed_host_memory` sets three glibc ``mallopt`` options for the whole process: one
malloc arena (a thread's own arena can only serve large requests by ``mmap``), no ``mmap`` for
large requests, no trimming of the heap's top. Freed memory then stays mapped and is reused:
0 faults per step in the benchmark, and the train step of ``lm_bench.py --preset small`` goes
from 0.89x of transformers' speed to 1.11-1.13x on one core (docs/benchmarks.md). The costs:
the process's resident memory does not shrink after a peak, which is what a training or
generation process wants anyway, and the heap may take a few steps to settle (the scratch buffer
lands at the top of the heap until the holes left by earlier steps fit it): in fresh processes
the faults stopped within 20 steps and resident memory stayed flat afterwards, at 0.7-1.6 GB for
a step whose own peak is ~0.7 GB.

Call it first thing in a CPU program, before the first JAX computation creates the CPU client and
its threads (a thread keeps the arena it first allocated from). The same effect without code:
``GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296``
in the environment. On accelerators this does not matter (device memory has its own allocator).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["reuse_freed_host_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc <malloc.h>


def reuse_freed_host_memory() -> bool:
    """Make glibc keep and reuse freed memory (process-wide; see the module docstring).

    Returns True when the options were set, False where ``mallopt`` is unavailable (not glibc,
    e.g. macOS or musl), in which case nothing changed.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
