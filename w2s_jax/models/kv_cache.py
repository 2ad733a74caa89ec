"""The KV cache: one keys array and one values array per layer, read in place by the layer scan.

The layers run under one `jax.lax.scan` (see `transformer.py`), so inside the scan the layer is a
traced index. A cache stacked on a leading layer axis (`L x B x K x S x H`) must then be sliced
with that index, and XLA:CPU materialises the slice: two copies of a `B x K x S x H` array per
layer per decode step, 40% of the step (pipeline_bench small shapes, B=16, S=512: 0.64 ms per
copy, 5.4 of 13.5 ms). Here every layer keeps its own arrays and `LayerCache.read` runs the
attention on layer `layer`'s arrays through `jax.lax.switch`, one branch per layer, each branch
reading its own arrays where they lie. Only the attention's cache reads are per-layer code; the
layer itself (projections, MLP, norms) is still one scanned body.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from w2s_jax.models.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys/values of every layer for B rows and S slots (prompts left-padded).

    keys: L arrays `B x K x H x S`; values: L arrays `B x K x S x H` (each the layout its
    contraction reads: q @ k and p @ v are plain batched matmuls, no transpose of the cache; a
    decode step's q @ k over keys stored `S x H` ran 2.3x slower, 0.48 against 0.21 ms, B=16,
    K=4, S=384, H=32, G=2, one core); valid_BxS: False on padding and unwritten slots; index: int32 scalar, the next
    slot to write (shared by all rows).
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    valid_BxS: jax.Array
    index: jax.Array

    @property
    def max_len(self) -> int:
        """Number of slots S."""
        return self.valid_BxS.shape[1]

    def layer(self, layer: jax.Array) -> LayerCache:
        """Layer `layer` (an int, or a traced index inside the layer scan)."""
        return LayerCache(keys=self.keys, values=self.values, layer=layer)

    def written(self, new_keys_L: jax.Array, new_values_L: jax.Array, valid_BxS: jax.Array, num_new: int) -> KVCache:
        """The cache with T new keys (`L x B x K x H x T`) and values (`L x B x K x T x H`), as
        the scan stacks them, written at slots [index, index + T), in place when it is donated."""
        at = self.index
        return KVCache(keys=tuple(jax.lax.dynamic_update_slice(k, new_keys_L[i], (0, 0, 0, at))
                                  for i, k in enumerate(self.keys)),
                       values=tuple(jax.lax.dynamic_update_slice(v, new_values_L[i], (0, 0, at, 0))
                                    for i, v in enumerate(self.values)),
                       valid_BxS=valid_BxS, index=(self.index + num_new).astype(jnp.int32))


@dataclasses.dataclass(frozen=True)
class LayerCache:
    """One layer's view of a :class:`KVCache` inside the layer scan (nothing is sliced out)."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    layer: jax.Array

    @property
    def max_len(self) -> int:
        return self.values[0].shape[2]

    @property
    def dtype(self):
        return self.keys[0].dtype

    def with_keys(self, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
        """`fn(k_BxKxHxS)` on this layer's keys (its other inputs closed over)."""
        return _per_layer(self.layer, self.keys, fn)

    def with_values(self, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
        """`fn(v_BxKxSxH)` on this layer's values."""
        return _per_layer(self.layer, self.values, fn)

    def with_keys_and_values(self, fn: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
        """`fn(k_BxKxHxS, v_BxKxSxH)` on this layer's keys and values."""
        return _per_layer(self.layer, tuple(zip(self.keys, self.values)), lambda kv: fn(*kv))


def _per_layer(layer, arrays_L: tuple, fn):
    """`fn(arrays_L[layer])` for a traced `layer`: one `lax.switch` branch per layer, the branch
    taken reading its layer's array in place, where a slice of a stacked array would be a copy
    (module docstring). Measured alone (4 layers, B=16, K=4, S=512, H=32, scores of one query per
    head, one core): 1.42 ms through the switch against 2.79 ms slicing a stacked cache. Each
    branch is one contraction, so the program grows with depth by a few lines per layer only.
    """
    branches = [functools.partial(fn, a) for a in arrays_L]
    if len(branches) == 1:
        return branches[0]()
    return jax.lax.switch(layer, branches)


def init_cache(config: ModelConfig, *, batch_size: int, max_len: int, dtype=jnp.float32) -> KVCache:
    """An empty cache (all slots invalid, index 0) for `batch_size` rows and `max_len` slots."""
    if batch_size <= 0 or max_len <= 0:
        raise ValueError(f"batch_size={batch_size} and max_len={max_len} must be positive")
    B, K, S, H = batch_size, config.num_kv_heads, max_len, config.head_dim
    zeros = lambda shape: tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))  # noqa: E731
    return KVCache(keys=zeros((B, K, H, S)), values=zeros((B, K, S, H)), valid_BxS=jnp.zeros((batch_size, max_len), bool),
                   index=jnp.zeros((), jnp.int32))
