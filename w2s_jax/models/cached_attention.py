"""Attention of T new queries over a KV cache: a decode step's (T = 1) and a prefill chunk's after
earlier ones. Inference only; `layers.Attention` calls it for a cache that holds slots already.

Two forms of one softmax over the S cached slots and the T new ones, both tested against
`attention.reference_attention` for every family (`tests/lm/test_attention.py`): `attend_cached`,
the cached and the new keys in two parts sharing their max (every backend), and, for a CPU
prefill chunk, `_attend_cached_blocks`, the cache read in `PREFILL_KEY_BLOCK`-slot blocks under an
online softmax whose trip count is the number of blocks written (a data-dependent loop, which the
accelerators do not run: they prefill a prompt whole, `backend.Backend.prefill`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from w2s_jax.models import backend
from w2s_jax.models.attention import masked_scores
from w2s_jax.models.matmul import matmul

PREFILL_KEY_BLOCK = 64  # cached slots per block in a prefill chunk's attention


def attend_cached(q_BxKxGTxH, kv_cache, *, k_new_BxKxHxT, v_new_BxKxTxH, cached_BxTxS, new_BxTxT, num_written,
                  config, dtype) -> jax.Array:
    """The T new queries over the S cached slots (where `cached_BxTxS`) and the T new keys
    (where `new_BxTxT`), as one softmax over S + T; returns out_BxKxGTxH. Inference only.

    The cached and the new keys are contracted separately, never concatenated (that would copy
    the cache), each cache contraction on the layer's own array (`LayerCache.with_keys`), and
    the softmax is normalised after the PV products: the division is then on GT x H outputs,
    not GT x S probabilities, and XLA:CPU has no softmax to fuse into the matmul's operand
    (training keeps softmax-then-matmul, whose backward pass is faster; docs/benchmarks.md).
    """
    G, cap = config.num_heads // config.num_kv_heads, config.attn_logit_softcap
    if (k_new_BxKxHxT.shape[3] > 1 and kv_cache.max_len % PREFILL_KEY_BLOCK == 0
            and backend.active().prefill == "chunked"):
        return _attend_cached_blocks(q_BxKxGTxH, kv_cache, k_new_BxKxHxT=k_new_BxKxHxT,
                                     v_new_BxKxTxH=v_new_BxKxTxH, cached_BxTxS=cached_BxTxS,
                                     new_BxTxT=new_BxTxT, num_written=num_written, config=config, dtype=dtype)
    as_dtype = lambda x: x.astype(dtype)  # noqa: E731
    cached = kv_cache.with_keys(lambda k_BxKxHxS: matmul(q_BxKxGTxH, as_dtype(k_BxKxHxS)))
    new = matmul(q_BxKxGTxH, k_new_BxKxHxT)
    # one softmax over the S + T slots, in two parts sharing their max (no concatenation)
    cached = masked_scores(cached, cached_BxTxS, G, cap)
    new = masked_scores(new, new_BxTxT, G, cap)
    peak = jnp.maximum(jnp.max(cached, axis=-1, keepdims=True), jnp.max(new, axis=-1, keepdims=True))
    e_cached, e_new = jnp.exp(cached - peak), jnp.exp(new - peak)
    total = jnp.sum(e_cached, axis=-1, keepdims=True) + jnp.sum(e_new, axis=-1, keepdims=True)
    p_cached, p_new = e_cached.astype(dtype), e_new.astype(dtype)
    out = (kv_cache.with_values(lambda v_BxKxSxH: matmul(p_cached, as_dtype(v_BxKxSxH)))
           + matmul(p_new, v_new_BxKxTxH))
    return (out / total.astype(dtype)).astype(dtype)


def _attend_cached_blocks(q_BxKxGTxH, kv_cache, *, k_new_BxKxHxT, v_new_BxKxTxH, cached_BxTxS, new_BxTxT,
                          num_written, config, dtype) -> jax.Array:
    """`attend_cached` for a prefill chunk (T > 1): the cached slots are read in blocks of
    `PREFILL_KEY_BLOCK`, and only the blocks holding slots written before this call (the
    first ceil(num_written / block)), with an online softmax across blocks (running max,
    sum and PV product, rescaled when the max grows). Chunk i of a prompt reads i chunks'
    worth of slots instead of all S: about half the cached attention of a prefill.
    """
    G, cap = config.num_heads // config.num_kv_heads, config.attn_logit_softcap
    block = PREFILL_KEY_BLOCK
    # the T new keys first: every real query sees itself, so the running max starts finite
    new = masked_scores(matmul(q_BxKxGTxH, k_new_BxKxHxT), new_BxTxT, G, cap)
    peak = jnp.max(new, axis=-1, keepdims=True)
    e_new = jnp.exp(new - peak)
    start = (peak, jnp.sum(e_new, axis=-1, keepdims=True), matmul(e_new.astype(dtype), v_new_BxKxTxH))
    num_blocks = (num_written + block - 1) // block
    if config.sliding_window is None:
        # Every cached slot lies before every query of the chunk, so without a window its
        # mask is the key's validity alone, the same for all T rows: the chunk's last row
        # (which sees every slot up to itself). One mask row per block instead of T, broadcast
        # in the select (docs/benchmarks.md).
        cached_BxTxS = cached_BxTxS[:, -1:, :]

    def add_block(i, carry):
        # each layer's arrays are read in a switch branch holding just the slice and the
        # matmul, so the loop itself is not repeated per layer (compile time)
        peak, total, out = carry
        at = i * block
        raw = kv_cache.with_keys(lambda k_BxKxHxS: matmul(
            q_BxKxGTxH, jax.lax.dynamic_slice_in_dim(k_BxKxHxS, at, block, axis=3).astype(dtype)))
        scores = masked_scores(raw, jax.lax.dynamic_slice_in_dim(cached_BxTxS, at, block, axis=2), G, cap)
        new_peak = jnp.maximum(peak, jnp.max(scores, axis=-1, keepdims=True))
        rescale = jnp.exp(peak - new_peak)
        p_block = jnp.exp(scores - new_peak)
        pv = kv_cache.with_values(lambda v_BxKxSxH: matmul(
            p_block.astype(dtype), jax.lax.dynamic_slice_in_dim(v_BxKxSxH, at, block, axis=2).astype(dtype)))
        return (new_peak, total * rescale + jnp.sum(p_block, axis=-1, keepdims=True),
                out * rescale.astype(dtype) + pv)

    _, total, out = jax.lax.fori_loop(0, num_blocks, add_block, start)
    return (out / total.astype(dtype)).astype(dtype)
