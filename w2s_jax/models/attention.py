"""Scaled dot-product attention, written plainly, and the fused form accelerators run.

`reference_attention` is the definition (Vaswani et al. 2017, eq. 1, with grouped-query heads,
Ainslie et al. 2023): for query head n of kv group k = n // G,

    out[b, t, n] = sum_s softmax_s(mask(softcap(scale * q[b, t, n] . k[b, s, k]))) v[b, s, k]

with masked scores set to the dtype's lowest value before the softmax, in float32. One einsum per
product: a reader can check it against the paper, and every optimised path of `layers.Attention`
(the batched rank-4 form tuned for XLA:CPU, the cached two-part softmax, the blocked prefill,
the fused form below) is tested against it for every model family (`tests/lm/test_attention.py`).

`fused_attention` calls `jax.nn.dot_product_attention`, which runs cuDNN's flash attention on a
GPU when asked (`implementation="cudnn"`, 16-bit operands) and XLA's own lowering elsewhere; the
backend decides which (`backend.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SIXTEEN_BIT = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


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
                    *, scale: float, implementation: str | None = None) -> jax.Array:
    """`reference_attention` (no softcap) through `jax.nn.dot_product_attention`.

    implementation: "cudnn" runs cuDNN's fused kernel, for 16-bit operands only (float32 falls
    back to XLA's lowering); None: XLA's. A query that sees no key at all (a left-padding slot)
    is let see its own slot when T == S, so that no kernel divides by an empty sum; nothing reads
    those rows' outputs.
    """
    T, S = q_BxTxNxH.shape[1], k_BxSxKxH.shape[1]
    if T == S:
        mask_BxTxS = mask_BxTxS | jnp.eye(T, dtype=bool)[None]
    if implementation == "cudnn" and q_BxTxNxH.dtype not in SIXTEEN_BIT:
        implementation = None
    return jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask=mask_BxTxS[:, None],
                                        scale=scale, implementation=implementation)
