"""The KV cache, in two layouts: stacked, or one array per layer (XLA:CPU's decoding).

The layers run under one `jax.lax.scan` (see `transformer.py`), so inside the scan the layer is a
traced index, and the cache must be read at that index:

- **stacked** (`L x ...` arrays): the layer's slice is taken with `dynamic_index`, which XLA:CPU
  materialises as a copy. The program holds one layer whatever the depth.
- **per layer** (a tuple of L arrays): the read goes through `jax.lax.switch`, one branch per
  layer, each branch reading its own array in place. No copy, but every branch is code of its own
  (one slice-and-contraction each), so the program grows a little with depth.

On XLA:CPU a decode step reads the whole cache for one token, and the slice copies were a large
part of the step, so the CPU backend decodes from the per-layer layout. A prefill chunk reads
only the written blocks of the cache, once per chunk of many tokens: there a copy of a block
costs little, and the stacked layout keeps the prefill program the same size at any depth. The
CPU backend prefills into a stacked cache and hands decoding the per-layer one
(`KVCache.per_layer`, one copy of the cache per batch). Accelerators keep the stacked cache
throughout: a switch is a conditional, which they must not run per token (`backend.py`). The
measurements are in docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from w2s_jax.models.config import ModelConfig

Layers = jax.Array | tuple[jax.Array, ...]  # L x ... stacked, or L arrays


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys/values of every layer for B rows and S slots (prompts left-padded).

    keys: `B x K x H x S` per layer; values: `B x K x S x H` per layer (each the layout its
    contraction reads: q @ k and p @ v are plain batched matmuls, no transpose of the cache;
    docs/benchmarks.md), either stacked on a leading L axis or as a tuple of L
    arrays (module docstring); valid_BxS: False on padding and unwritten slots; index: int32
    scalar, the next slot to write (shared by all rows).
    """

    keys: Layers
    values: Layers
    valid_BxS: jax.Array
    index: jax.Array

    @property
    def max_len(self) -> int:
        """Number of slots S."""
        return self.valid_BxS.shape[1]

    @property
    def stacked(self) -> bool:
        return not isinstance(self.keys, tuple)

    def layer(self, layer: jax.Array) -> LayerCache:
        """Layer `layer` (an int, or a traced index inside the layer scan)."""
        return LayerCache(keys=self.keys, values=self.values, layer=layer)

    def per_layer(self) -> KVCache:
        """The same cache as a tuple of per-layer arrays (a copy when stacked)."""
        if not self.stacked:
            return self
        split = lambda x: tuple(x[i] for i in range(x.shape[0]))  # noqa: E731
        return dataclasses.replace(self, keys=split(self.keys), values=split(self.values))

    def written(self, new_keys_L: jax.Array, new_values_L: jax.Array, valid_BxS: jax.Array, num_new: int) -> KVCache:
        """The cache with T new keys (`L x B x K x H x T`) and values (`L x B x K x T x H`), as
        the scan stacks them, written at slots [index, index + T), in place when it is donated."""
        at = self.index
        if self.stacked:
            keys = jax.lax.dynamic_update_slice(self.keys, new_keys_L, (0, 0, 0, 0, at))
            values = jax.lax.dynamic_update_slice(self.values, new_values_L, (0, 0, 0, at, 0))
        else:
            keys = tuple(jax.lax.dynamic_update_slice(k, new_keys_L[i], (0, 0, 0, at)) for i, k in enumerate(self.keys))
            values = tuple(jax.lax.dynamic_update_slice(v, new_values_L[i], (0, 0, at, 0))
                           for i, v in enumerate(self.values))
        return KVCache(keys=keys, values=values, valid_BxS=valid_BxS, index=(self.index + num_new).astype(jnp.int32))


@dataclasses.dataclass(frozen=True)
class LayerCache:
    """One layer's view of a :class:`KVCache` inside the layer scan."""

    keys: Layers
    values: Layers
    layer: jax.Array

    @property
    def max_len(self) -> int:
        return _first(self.values).shape[-2]

    @property
    def dtype(self):
        return _first(self.keys).dtype

    def with_keys(self, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
        """`fn(k_BxKxHxS)` on this layer's keys (its other inputs closed over)."""
        return _per_layer(self.layer, self.keys, fn)

    def with_values(self, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
        """`fn(v_BxKxSxH)` on this layer's values."""
        return _per_layer(self.layer, self.values, fn)


def _first(arrays_L: Layers) -> jax.Array:
    """An array with a layer's trailing shape and dtype."""
    return arrays_L[0] if isinstance(arrays_L, tuple) else arrays_L


def _per_layer(layer, arrays_L: Layers, fn):
    """`fn(arrays_L[layer])` for a traced `layer`.

    Stacked: the slice (a copy on XLA:CPU, which XLA may fuse with a slice `fn` takes of it). Per
    layer: one `lax.switch` branch per layer, the branch taken reading its layer's array in place
    (faster on XLA:CPU, docs/benchmarks.md; CPU backend only).
    """
    if not isinstance(arrays_L, tuple):
        return fn(jax.lax.dynamic_index_in_dim(arrays_L, layer, keepdims=False))
    branches = [functools.partial(fn, a) for a in arrays_L]
    if len(branches) == 1:
        return branches[0]()
    return jax.lax.switch(layer, branches)


def init_cache(config: ModelConfig, *, batch_size: int, max_len: int, dtype=jnp.float32,
               stacked: bool = False) -> KVCache:
    """An empty cache (all slots invalid, index 0) for `batch_size` rows and `max_len` slots,
    stacked on a leading layer axis or one array per layer (module docstring)."""
    if batch_size <= 0 or max_len <= 0:
        raise ValueError(f"batch_size={batch_size} and max_len={max_len} must be positive")
    L, B, K, S, H = config.num_layers, batch_size, config.num_kv_heads, max_len, config.head_dim
    if stacked:
        zeros = lambda shape: jnp.zeros((L, *shape), dtype)  # noqa: E731
    else:
        zeros = lambda shape: tuple(jnp.zeros(shape, dtype) for _ in range(L))  # noqa: E731
    return KVCache(keys=zeros((B, K, H, S)), values=zeros((B, K, S, H)),
                   valid_BxS=jnp.zeros((batch_size, max_len), bool), index=jnp.zeros((), jnp.int32))
