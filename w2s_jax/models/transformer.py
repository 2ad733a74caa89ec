"""The decoder-only Transformer, its KV cache and the attention masks.

Slots: without a cache, query t and key s are slots t and s of the input; with a cache, the T
new tokens occupy slots [index, index + T) of an S-slot cache. A query at slot q sees key slot s
iff s is valid, s <= q, and (for sliding-window layers) s > q - W — the slot arithmetic
transformers uses (its `cache_position`), so left padding shifts no windows.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_jax.models.config import ModelConfig
from w2s_jax.models.layers import (
    MLP,
    Attention,
    RMSNorm,
    dense,
    dense_transposed,
    init_param,
    softcap,
)
from w2s_jax.models.rope import rope_cos_sin


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys/values of every layer for B rows and S slots (prompts left-padded).

    keys, values: per-layer tuples of `B x K x S x H` arrays (head-major: attention reads them
    without a transpose); valid_BxS: False on padding and unwritten slots; index: int32 scalar, the
    next slot to write (shared by all rows).
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    valid_BxS: jax.Array
    index: jax.Array

    @property
    def max_len(self) -> int:
        """Number of slots S."""
        return self.valid_BxS.shape[1]


def init_cache(config: ModelConfig, *, batch_size: int, max_len: int, dtype=jnp.float32) -> KVCache:
    """An empty cache (all slots invalid, index 0) for `batch_size` rows and `max_len` slots."""
    if batch_size <= 0 or max_len <= 0:
        raise ValueError(f"batch_size={batch_size} and max_len={max_len} must be positive")
    shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)
    keys = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    values = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(keys=keys, values=values, valid_BxS=jnp.zeros((batch_size, max_len), bool),
                   index=jnp.zeros((), jnp.int32))


def attention_mask(valid_BxS: jax.Array, q_slot_T: jax.Array, window: int | None) -> jax.Array:
    """Boolean mask `B x T x S`: key slot s visible to query slot q (see module docstring)."""
    k_slot_S = jnp.arange(valid_BxS.shape[1])
    visible_TxS = k_slot_S[None, :] <= q_slot_T[:, None]
    if window is not None:
        visible_TxS &= k_slot_S[None, :] > q_slot_T[:, None] - window
    return valid_BxS[:, None, :] & visible_TxS[None]


class DecoderLayer(nnx.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)); Gemma 2 adds post-norms."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        c = config
        norm = lambda: RMSNorm(c.hidden_size, eps=c.rms_norm_eps, style=c.norm_style, rngs=rngs,  # noqa: E731
                               param_dtype=param_dtype)
        self.input_norm = norm()
        self.attn = Attention(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.post_attn_norm = norm()
        self.mlp = MLP(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.sandwich = c.sandwich_norms
        if c.sandwich_norms:
            self.pre_mlp_norm = norm()
            self.post_mlp_norm = norm()

    def __call__(self, x_BxTxD, *, cos_BxTxH, sin_BxTxH, mask_BxTxS, kv_cache=None, index=None):
        h_BxTxD, kv_cache = self.attn(self.input_norm(x_BxTxD), cos_BxTxH=cos_BxTxH, sin_BxTxH=sin_BxTxH,
                                      mask_BxTxS=mask_BxTxS, kv_cache=kv_cache, index=index)
        if self.sandwich:
            x_BxTxD = x_BxTxD + self.post_attn_norm(h_BxTxD)
            return x_BxTxD + self.post_mlp_norm(self.mlp(self.pre_mlp_norm(x_BxTxD))), kv_cache
        x_BxTxD = x_BxTxD + h_BxTxD
        return x_BxTxD + self.mlp(self.post_attn_norm(x_BxTxD)), kv_cache


class Transformer(nnx.Module):
    """Decoder-only LM for every family in `ModelConfig.model_type` (see the shared API contract)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        c = config
        self.config = config
        self.dtype = dtype
        self.embedding = init_param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), param_dtype)
        self.layers = nnx.List([DecoderLayer(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
                                for _ in range(c.num_layers)])
        self.final_norm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps, style=c.norm_style, rngs=rngs,
                                  param_dtype=param_dtype)
        if not c.tie_word_embeddings:
            self.lm_head = init_param(rngs, (c.hidden_size, c.vocab_size), ("embed", "vocab"), param_dtype)

    def embed(self, tokens_BxT: jax.Array) -> jax.Array:
        """Token embeddings `B x T x D` in the activation dtype (sqrt(D)-scaled for Gemma)."""
        x_BxTxD = jnp.take(self.embedding[...], tokens_BxT, axis=0).astype(self.dtype)
        if self.config.embed_scale:
            x_BxTxD = x_BxTxD * jnp.asarray(self.config.hidden_size ** 0.5, jnp.float32).astype(self.dtype)
        return x_BxTxD

    def unembed(self, h_BxTxD: jax.Array) -> jax.Array:
        """Final norm, output projection and logit softcap; float32 logits `... x V` for hidden
        states `... x D` (any leading axes: `B x T x D`, or `N x D` gathered positions)."""
        h_BxTxD = self.final_norm(h_BxTxD)
        if self.config.tie_word_embeddings:
            logits = dense_transposed(h_BxTxD, self.embedding[...].astype(self.dtype))  # BTD,VD->BTV
        else:
            logits = dense(h_BxTxD, self.lm_head[...].astype(self.dtype))  # BTD,DV->BTV
        return softcap(logits.astype(jnp.float32), self.config.final_logit_softcap)

    def __call__(self, tokens_BxT: jax.Array, *, positions_BxT: jax.Array, valid_BxT: jax.Array,
                 cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
        """Logits `B x T x V` (float32) and the updated cache (None without one).

        positions_BxT: RoPE positions (int); valid_BxT: False on left padding. With `cache`, the
        tokens are written at slots [cache.index, cache.index + T); the caller keeps
        cache.index + T <= cache.max_len (XLA clamps out-of-range writes instead of failing).
        A caller that needs logits at a few positions only calls :meth:`hidden` and unembeds
        those (`unembed` or `target_logprobs`): the full array is B x T x V float32.
        """
        h_BxTxD, cache = self.hidden(tokens_BxT, positions_BxT=positions_BxT, valid_BxT=valid_BxT, cache=cache)
        return self.unembed(h_BxTxD), cache

    def hidden(self, tokens_BxT: jax.Array, *, positions_BxT: jax.Array, valid_BxT: jax.Array,
               cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
        """The last layer's output `B x T x D` (before the final norm) and the updated cache.

        Same arguments as `__call__`; `unembed(hidden(...)[0])` are its logits.
        """
        c = self.config
        T = tokens_BxT.shape[1]
        x_BxTxD = self.embed(tokens_BxT)
        cos_BxTxH, sin_BxTxH = rope_cos_sin(positions_BxT, c, self.dtype)
        if cache is None:
            q_slot_T, kv_valid_BxS, index = jnp.arange(T), valid_BxT.astype(bool), None
        else:
            if T > cache.max_len:
                raise ValueError(f"{T} new tokens do not fit a cache of max_len={cache.max_len}")
            index = cache.index
            q_slot_T = index + jnp.arange(T)
            kv_valid_BxS = jax.lax.dynamic_update_slice(cache.valid_BxS, valid_BxT.astype(bool), (0, index))
        masks = {w: attention_mask(kv_valid_BxS, q_slot_T, w)
                 for w in {c.layer_window(i) for i in range(c.num_layers)}}
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else (cache.keys[i], cache.values[i])
            x_BxTxD, kv = layer(x_BxTxD, cos_BxTxH=cos_BxTxH, sin_BxTxH=sin_BxTxH,
                                mask_BxTxS=masks[c.layer_window(i)], kv_cache=kv, index=index)
            if kv is not None:
                keys.append(kv[0])
                values.append(kv[1])
        if cache is None:
            return x_BxTxD, None
        return x_BxTxD, KVCache(keys=tuple(keys), values=tuple(values), valid_BxS=kv_valid_BxS,
                                     index=(index + T).astype(jnp.int32))
