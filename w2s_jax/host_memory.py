"""Host memory for XLA:CPU: keep freed pages mapped so each compiled step does not fault them anew.

XLA:CPU allocates one scratch buffer per run of a compiled program (154 MB for the train step of
``benchmarks/lm_bench.py --preset small``). glibc serves a request that large with a fresh
``mmap`` and returns it to the kernel on free, so every step touches every page for the first
time again: about 38K minor page faults, ~45 ms of a ~275 ms step on one core. PyTorch's
per-tensor buffers are smaller and mostly come back from the heap, so it does not pay this.

:func:`reuse_freed_host_memory` makes the pages stay mapped and be reused, with two glibc
``mallopt`` options for the whole process (no ``mmap`` for large requests, no trimming of the
heap's top) and one JAX setting: CPU programs run on the calling thread
(``jax_cpu_enable_async_dispatch=False``), so their scratch comes from the main thread's heap.
That last part matters because a thread's own malloc arena (glibc gives each thread one) can
serve a request over 64 MB only by ``mmap``, whatever the options: with JAX's default
asynchronous dispatch a worker thread allocates the scratch, and the train step above faulted
49,667 pages every step. Before, this function forced one arena for every thread instead, which
also kept the faults at 0 but serialised XLA's compiler threads on that arena's lock: a
Llama-3.2-1B-shaped decode program compiled in 3.3-3.8 s instead of 2.4-2.9 s, and two programs
compiled side by side (`inference.generation` does) took longer than one after the other
(docs/benchmarks.md). Running on the calling thread costs nothing measurable here: every step of
our loops waits for its result anyway (warm 16-token generate on that checkpoint 4.8-5.1 s
against 5.4-5.8 s).

The costs: the process's resident memory does not shrink after a peak, which is what a training
or generation process wants anyway, and the heap may take a few steps to settle (the scratch
buffer lands at the top of the heap until the holes left by earlier steps fit it): in fresh
processes the faults stopped within 20 steps and resident memory stayed flat afterwards. A
program sharded over several CPU devices still runs on worker threads (JAX dispatches those
asynchronously whatever the setting), so its scratch is still mapped anew each run.

Call it first thing in a CPU program, before the first JAX computation creates the CPU client
(the dispatch setting is read then). The malloc part without code:
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296`` in the
environment; the dispatch part is ``jax.config.update("jax_cpu_enable_async_dispatch", False)``.
On accelerators none of this matters (device memory has its own allocator).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["reuse_freed_host_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>


def reuse_freed_host_memory() -> bool:
    """Make glibc keep and reuse freed memory and run CPU programs on the calling thread
    (process-wide; see the module docstring).

    Returns True when the malloc options were set, False where ``mallopt`` is unavailable (not
    glibc, e.g. macOS or musl), in which case nothing changed.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not all(mallopt(option, value) == 1 for option, value in (
            (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))):
        return False
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)  # scratch from this thread's heap
    return True
