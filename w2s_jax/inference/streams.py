"""Batches in flight at once: on a CPU, each runs on a thread of its own.

XLA:CPU runs a program's operations one after another, each spread over the cores only when it
is large. A decoding step is a chain of small ones (one token per row: a few ``16 x 256``
matmuls and attention over the cache, memory-bound), so a second core barely speeds it up. Two
batches, each generating on a thread of its own (the host-memory setup runs CPU programs on the
calling thread, `host_memory.py`), keep both cores busy (docs/benchmarks.md). Scoring and top-k
(a prefill without decoding) run in streams the same way. Threads that reach a new shape together
compile its program once (JAX's own caches; generation's compile-ahead waits for the thread
compiling it, `compile_ahead.py`; `tests/lm/test_streams.py` counts the compilations).

:func:`default_streams` is therefore 2 on a CPU with two or more cores and 1 elsewhere: an
accelerator runs one program at a time and gains nothing but the memory of a second batch, so
more than `Backend.max_streams` (1) is refused there; on a
mesh, batches stay in turn (two sharded programs in flight on the same devices would interleave
their collectives). Results do not depend on the number of streams: each batch is independent
and draws its sampling keys from its examples' ids.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

Batch = TypeVar("Batch")
Result = TypeVar("Result")


def default_streams(mesh=None, backend=None) -> int:
    """Batches to run at once: 2 on a backend without a stream limit (the CPU) with two or more
    usable cores and no mesh, else 1. backend: a `models.backend.Backend` (None: the mesh's or
    the default device's)."""
    backend = _backend(mesh, backend)
    if mesh is not None or backend.max_streams is not None:
        return 1
    return 2 if _usable_cores() >= 2 else 1


def resolve_streams(streams: int | None, mesh, backend=None) -> int:
    """``streams``, checked, or :func:`default_streams` for None."""
    streams = default_streams(mesh, backend) if streams is None else streams
    check_streams(streams, mesh, backend)
    return streams


def check_streams(streams: int, mesh, backend=None) -> None:
    """Raises a ValueError naming the problem unless ``streams`` is a valid number of streams
    for ``mesh`` and ``backend`` (an accelerator runs one program at a time: more than its
    `Backend.max_streams` is refused)."""
    if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
        raise ValueError(f"streams must be an integer >= 1, got {streams!r}")
    if streams > 1 and mesh is not None:
        raise ValueError(f"streams={streams} with a mesh: sharded batches run one at a time (two "
                         "programs in flight on the same devices would interleave their "
                         "collectives); use streams=1")
    backend = _backend(mesh, backend)
    if backend.max_streams is not None and streams > backend.max_streams:
        raise ValueError(f"streams={streams} on {backend.platform}: the device runs one program at a time, so "
                         f"batches in flight at once only add memory; use streams<={backend.max_streams}")


def _backend(mesh, backend):
    from w2s_jax.models.backend import for_mesh, for_platform  # models import flax: keep this module light

    return for_mesh(mesh) if backend is None else for_platform(backend)


def map_batches(fn: Callable[[Batch], Result], batches: Sequence[Batch], *, streams: int, desc: str,
                costs: Sequence[float] | None = None) -> list[Result]:
    """``[fn(batch) for batch in batches]``, with up to ``streams`` batches running at once
    (threads), under a progress bar counting finished batches. An error in any batch is raised
    here; batches not yet started are cancelled.

    costs: each batch's expected cost (e.g. its longest prompt). In streams, batches start in
    decreasing cost, so the last batches to run are the cheap ones and the streams finish close
    together (longest processing time first); with four length-sorted batches of which the last
    is the longest, starting in order would leave it running alone at the end.
    """
    if streams == 1 or len(batches) < 2:
        return [fn(batch) for batch in progress(batches, desc=desc)]
    order = range(len(batches)) if costs is None else sorted(range(len(batches)), key=lambda i: -costs[i])
    with concurrent.futures.ThreadPoolExecutor(min(streams, len(batches)),
                                               thread_name_prefix=f"w2s-{desc}") as pool:
        futures = {pool.submit(fn, batches[i]): i for i in order}
        results: list = [None] * len(batches)
        try:
            for future in progress(concurrent.futures.as_completed(futures), desc=desc, total=len(batches)):
                results[futures[future]] = future.result()
        finally:
            for future in futures:
                future.cancel()
    return results


def progress(batches: Iterable[Batch], desc: str, total: int | None = None) -> Iterable[Batch]:
    """``batches`` with a tqdm bar when there is more than one batch and stderr is a terminal."""
    total = len(batches) if total is None else total
    return tqdm(batches, desc=desc, unit="batch", leave=False, total=total, disable=True if total < 2 else None)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
