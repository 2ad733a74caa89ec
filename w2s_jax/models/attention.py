"""Scaled dot-product attention, written plainly, and the fused form accelerators run.

`reference_attention` is the definition (Vaswani et al. 2017, eq. 1, with grouped-query heads,
Ainslie et al. 2023): for query head n of kv group k = n // G,

    out[b, t, n] = sum_s softmax_s(mask(softcap(scale * q[b, t, n] . k[b, s, k]))) v[b, s, k]

with masked scores set to the dtype's lowest value before the softmax, in float32. One einsum per
product: a reader can check it against the paper, and every optimised path of `layers.Attention`
(the batched rank-4 form tuned for XLA:CPU, the cached two-part softmax, the blocked prefill,
the fused form below) is tested against it for every model family (`tests/lm/test_attention.py`).

`fused_attention` calls `jax.nn.dot_product_attention`, which runs cuDNN's flash attention on a
GPU when asked (`implementation="cudnn"`, 16-bit operands) and XLA's own lowering elsewhere, or,
on a TPU (`implementation="splash"`), `splash_attention`: the Pallas/Mosaic splash-attention
kernel (`jax.experimental.pallas.ops.tpu.splash_attention`), lowered for "tpu" from any host. The
backend decides which (`backend.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SIXTEEN_BIT = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
    """cap * tanh(x / cap), or x when cap is None."""
    return x if cap is None else jnp.tanh(x / cap) * cap


def masked_scores(raw_BxKxGTxS: jax.Array, mask_BxTxS: jax.Array, G: int, cap: float | None) -> jax.Array:
    """Soft-capped and masked float32 attention scores in the grouped layout (the G*T query rows of
    each kv head stacked; the mask broadcast over G) from the products of scaled queries and keys."""
    B, _, GT, S = raw_BxKxGTxS.shape
    scores = softcap(raw_BxKxGTxS, cap)
    T = GT // G
    mask_Bx1xGTxS = jnp.broadcast_to(mask_BxTxS[:, None, None], (B, 1, G, T, S)).reshape(B, 1, GT, S)
    return jnp.where(mask_Bx1xGTxS, scores, jnp.finfo(scores.dtype).min).astype(jnp.float32)


def reference_attention(q_BxTxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array, mask_BxTxS: jax.Array,
                        *, scale: float, softcap: float | None = None) -> jax.Array:
    """Grouped-query attention by its definition (module docstring); returns `out_BxTxNxH`."""
    B, T, N, H = q_BxTxNxH.shape
    K = k_BxSxKxH.shape[2]
    q_BxTxKxGxH = q_BxTxNxH.reshape(B, T, K, N // K, H)
    scores_BxKxGxTxS = scale * jnp.einsum("BTKGH,BSKH->BKGTS", q_BxTxKxGxH, k_BxSxKxH,
                                          preferred_element_type=jnp.float32)
    if softcap is not None:
        scores_BxKxGxTxS = softcap * jnp.tanh(scores_BxKxGxTxS / softcap)
    visible_Bx1x1xTxS = mask_BxTxS[:, None, None]
    scores_BxKxGxTxS = jnp.where(visible_Bx1x1xTxS, scores_BxKxGxTxS, jnp.finfo(jnp.float32).min)
    probs_BxKxGxTxS = jax.nn.softmax(scores_BxKxGxTxS, axis=-1)
    out_BxTxKxGxH = jnp.einsum("BKGTS,BSKH->BTKGH", probs_BxKxGxTxS.astype(v_BxSxKxH.dtype), v_BxSxKxH,
                               preferred_element_type=jnp.float32)
    return out_BxTxKxGxH.reshape(B, T, N, H).astype(q_BxTxNxH.dtype)


def fused_attention(q_BxTxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array, mask_BxTxS: jax.Array,
                    *, scale: float, implementation: str | None = None, causal: bool = False) -> jax.Array:
    """`reference_attention` (no softcap) through a fused kernel.

    implementation: "cudnn" runs cuDNN's fused kernel (`jax.nn.dot_product_attention`); "splash"
    the TPU's splash attention (`splash_attention`, which needs `causal`: the mask is the causal
    one times the keys' validity, no window, and T == S a multiple of `SPLASH_BLOCK`); each for
    16-bit operands only, else XLA's lowering of `jax.nn.dot_product_attention` (None). A query
    that sees no key at all (a left-padding slot) is let see its own slot when T == S, so that no
    kernel divides by an empty sum; nothing reads those rows' outputs.
    """
    T, S = q_BxTxNxH.shape[1], k_BxSxKxH.shape[1]
    if q_BxTxNxH.dtype not in SIXTEEN_BIT:
        implementation = None
    if implementation == "splash":
        if causal and T == S and T % SPLASH_BLOCK == 0:
            # a causal mask's last row is the keys' validity (every slot is at or before it)
            return splash_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS[:, -1], scale=scale)
        implementation = None
    if T == S:
        mask_BxTxS = mask_BxTxS | jnp.eye(T, dtype=bool)[None]
    return jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask=mask_BxTxS[:, None],
                                        scale=scale, implementation=implementation)


SPLASH_BLOCK = 128  # the splash kernel's query and key block (its default tile on every TPU generation)


def splash_attention(q_BxTxNxH: jax.Array, k_BxTxKxH: jax.Array, v_BxTxKxH: jax.Array, valid_BxT: jax.Array,
                     *, scale: float, interpret: bool = False) -> jax.Array:
    """Causal grouped-query self-attention over slots whose validity is `valid_BxT`, by the TPU's
    splash-attention kernel: `reference_attention` with the mask causal & valid key, for the rows
    of valid queries (a padding query attends to the padding slots before it instead).

    The validity becomes the kernel's segment ids (valid slots one segment, padding another), the
    causal mask its static block-sparse mask; each kv head's G query heads go through the
    kernel's multi-query form, mapped over kv heads and rows. T must be a multiple of
    `SPLASH_BLOCK`. interpret: run the kernel in Pallas's interpreter (any platform: the tests).
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    B, T, N, H = q_BxTxNxH.shape
    K = k_BxTxKxH.shape[2]
    G = N // K
    if T % SPLASH_BLOCK:
        raise ValueError(f"splash attention needs a length that is a multiple of {SPLASH_BLOCK}, got {T}")
    kernel = splash.make_splash_mqa(masks.MultiHeadMask([masks.CausalMask((T, T))] * G), head_shards=1,
                                    q_seq_shards=1, interpret=interpret)
    q_BxKxGxTxH = (q_BxTxNxH * jnp.asarray(scale, q_BxTxNxH.dtype)).reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4)
    k_BxKxTxH, v_BxKxTxH = k_BxTxKxH.transpose(0, 2, 1, 3), v_BxTxKxH.transpose(0, 2, 1, 3)
    segment_BxT = valid_BxT.astype(jnp.int32)
    segments = splash.SegmentIds(q=segment_BxT, kv=segment_BxT)
    per_row = jax.vmap(kernel, in_axes=(0, 0, 0, None))  # over kv heads, one row's segments
    out_BxKxGxTxH = jax.vmap(per_row)(q_BxKxGxTxH, k_BxKxTxH, v_BxKxTxH, segments)
    return out_BxKxGxTxH.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H)
