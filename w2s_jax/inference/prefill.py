"""Token slots through the model a chunk at a time, filling a KV cache: generation's prefill and
the forward pass of scoring and top-k.

A chunk of C slots attends to the slots written before it (read from the cache, only the blocks
written so far: `cached_attention._attend_cached_blocks`) and to itself, so a sequence of T
slots never forms its ``T x T`` attention scores: each chunk forms ``C x T`` at most. Scoring
ran its batches whole, one ``B x N x T x T`` float32 score array per layer: 75 MB for 16 rows of
384 tokens of `pipeline_bench.py`'s small model, 302 MB for a Llama-3.2-1B-shaped one, 4.3 GB
for 8 rows of 2,048 tokens of it. In chunks (`scoring_chunk`: short rows still run whole) that
memory is bounded, and the work is that of generation's prefill.

:class:`CacheSpec` says which cache to make (static, hashable: it is a jit static argument);
:func:`stacked_cache` makes it in the stacked layout a prefill writes, and :func:`place_cache`
spreads its rows over a mesh's ("data", "fsdp") axes.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from w2s_jax.parallel import batch_sharding

ROWS_PER_CHUNK = 1024  # rows (batch x chunk slots) a scoring chunk step aims for


class CacheSpec(NamedTuple):
    """What a prefill needs to make its cache (static: hashable)."""

    config: object  # ModelConfig
    batch_size: int
    max_len: int
    dtype: object
    mesh: object  # jax.sharding.Mesh or None


def stacked_cache(spec: CacheSpec):
    """An empty stacked cache, the layout a prefill writes."""
    # models import flax modules; keep this module light
    from w2s_jax.models import init_cache

    return init_cache(spec.config, batch_size=spec.batch_size, max_len=spec.max_len, dtype=spec.dtype,
                      stacked=True)


def place_cache(cache, spec: CacheSpec):
    """With a mesh, the cache's rows over the mesh's ("data", "fsdp") axes (its batch axis: the
    second of stacked `L x B x ...` arrays, the first of per-layer ones), so a cache never sits
    whole on one device; without one, the cache as it is."""
    if spec.mesh is None:
        return cache
    rows = lambda x: batch_sharding(spec.mesh, x.ndim, axis=x.ndim - 4)  # noqa: E731
    kv = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, rows(x)), (cache.keys, cache.values))
    return dataclasses.replace(cache, keys=kv[0], values=kv[1],
                               valid_BxS=jax.lax.with_sharding_constraint(cache.valid_BxS, batch_sharding(spec.mesh, 2)),
                               index=jax.lax.with_sharding_constraint(cache.index,
                                                                      NamedSharding(spec.mesh, PartitionSpec())))


def run_chunks(model, tokens_BxS, positions_BxS, valid_BxS, cache, *, num_chunks, chunk: int, keep: str):
    """Slots [0, num_chunks * chunk) of the arrays through ``model``, ``chunk`` at a time, each
    chunk written into ``cache`` after the slots before it (``num_chunks`` may be traced).

    num_chunks None: the backend prefills whole (`Backend.prefill`, accelerators): slots
    [0, chunk) go through in one pass into the empty cache, with no loop in the program.

    keep: "last": returns ``(cache, h_BxD)``, the hidden state of the last slot (generation
    samples from it; the other positions are never kept, and the last layer forms its output for
    each chunk's last slot alone: ``Transformer.hidden(last_only=True)``); "all":
    ``(cache, h_BxSxD)``, every slot's hidden state (scoring and top-k read the positions they
    need). Hidden states are the last layer's output before the final norm, as
    ``Transformer.hidden`` returns them.
    """
    if keep not in ("last", "all"):
        raise ValueError(f"keep must be 'last' or 'all', got {keep!r}")
    B, S = tokens_BxS.shape
    D = model.config.hidden_size

    def slots(x_BxS, start):
        return jax.lax.dynamic_slice_in_dim(x_BxS, start, chunk, axis=1)

    def write_chunk(i, carry):
        cache, h = carry
        start = i * chunk
        h_BxCxD, cache = model.hidden(slots(tokens_BxS, start), positions_BxT=slots(positions_BxS, start),
                                      valid_BxT=slots(valid_BxS, start), cache=cache, last_only=keep == "last")
        if keep == "last":
            return cache, h_BxCxD[:, -1]
        return cache, jax.lax.dynamic_update_slice_in_dim(h, h_BxCxD, start, axis=1)

    if num_chunks is None:
        h_BxCxD, cache = model.hidden(tokens_BxS[:, :chunk], positions_BxT=positions_BxS[:, :chunk],
                                      valid_BxT=valid_BxS[:, :chunk], cache=cache, last_only=keep == "last",
                                      fresh=True)
        if keep == "last":
            return cache, h_BxCxD[:, -1]
        return cache, jnp.pad(h_BxCxD, ((0, 0), (0, S - chunk), (0, 0)))
    h = jnp.zeros((B, D) if keep == "last" else (B, S, D), model.dtype)
    return jax.lax.fori_loop(0, num_chunks, write_chunk, (cache, h))


def scoring_chunk(batch_size: int, length: int) -> int:
    """The chunk for whole sequences of ``length`` slots, ``batch_size`` rows: the smallest power
    of two from 16 that divides ``length`` and gives a chunk step at least `ROWS_PER_CHUNK` rows;
    else the whole length as one chunk.

    Each chunk step reads every weight once, so a step of few rows is bound by that read, not by
    its arithmetic (`batching.prefill_chunk`): one 80-token row of a 1B model scored in chunks of
    16 would read its 5 GB of float32 weights five times instead of once. Short sequences and
    small batches (``batch_size * length`` up to `ROWS_PER_CHUNK`, or no such divisor) therefore
    run as one chunk, as a plain forward pass would. `pipeline_bench.py`'s small model, 16 rows of
    384 slots, picks 64 (1,024 rows a step).
    """
    chunk = 16
    while chunk < length:
        if length % chunk == 0 and batch_size * chunk >= ROWS_PER_CHUNK:
            return chunk
        chunk *= 2
    return length
