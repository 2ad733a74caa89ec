"""The matmul every model layer calls: `a @ b`, with 16-bit floats accumulated in float32.

For bfloat16 (or float16) operands the product is accumulated in float32 and rounded once to the
operands' dtype, as PyTorch does on CPU and accelerators do in hardware; written this way XLA:CPU
also takes its fast 16-bit path, which a plain 16-bit `a @ b` does not. XLA:CPU's fast path needs
two or more rows, so on the CPU backend a lone row is padded with a zero row
(`Backend.pad_single_row`). Other dtypes: plain `a @ b`. The measurements are in docs/benchmarks.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from w2s_jax.models import backend

SIXTEEN_BIT = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def matmul(a: jax.Array, b: jax.Array, *, transpose_b: bool = False) -> jax.Array:
    """`a @ b` (numpy matmul semantics, batch axes leading), or `a @ b.T` for a 2-D `b` stored
    (out, in) with `transpose_b` (contracted in place: XLA:CPU's 16-bit path does not fold a
    transpose of `b` into the product). 16-bit floats: see the module docstring."""
    return matmul_with(a, b.dtype, lambda a, accumulate: product(a, b, transpose_b=transpose_b, accumulate=accumulate))


def matmul_with(a: jax.Array, b_dtype, product_fn) -> jax.Array:
    """`matmul` around a product of one's own: `product_fn(a, accumulate)` multiplies the
    (possibly padded) `a` by a `b_dtype` operand with `product(..., accumulate=accumulate)`.
    `layer_weights.LayerWeight` passes a switch over per-layer weights, so the padding and the
    rounding sit outside its branches, each branch one product (less code to compile)."""
    sixteen_bit = a.dtype == jnp.dtype(b_dtype) and a.dtype in SIXTEEN_BIT and a.ndim >= 2
    pad = sixteen_bit and a.shape[-2] == 1 and backend.active().pad_single_row
    if pad:
        a = jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, 1), (0, 0)])
    y = product_fn(a, jnp.float32 if sixteen_bit else None)
    if pad:
        y = y[..., :1, :]
    return y.astype(a.dtype) if sixteen_bit else y


def product(a: jax.Array, b: jax.Array, *, transpose_b: bool = False, accumulate=None) -> jax.Array:
    """`a @ b` (or `a @ b.T`, 2-D `b`) accumulated in `accumulate` (None: the operands' dtype).

    With `transpose_b` and a few rows of `a` on the CPU (`weight_major`), the product is formed
    as `(b @ a.T).T`: the same dot products, the weight as the left operand."""
    if transpose_b:
        if b.ndim != 2:
            raise ValueError(f"transpose_b needs a 2-D b, got shape {b.shape}")
        if weight_major(a):
            b_x_aT = jax.lax.dot_general(b, a, (((1,), (1,)), ((), ())), preferred_element_type=accumulate)
            # The first barrier keeps XLA's simplifier from folding the transpose back into
            # `a @ b.T`; the second makes the transpose a copy of its own, so that a consumer
            # reducing over rows reads them contiguous (docs/benchmarks.md).
            return jax.lax.optimization_barrier(jax.lax.optimization_barrier(b_x_aT).T)
        return jax.lax.dot_general(a, b, (((a.ndim - 1,), (1,)), ((), ())), preferred_element_type=accumulate)
    return jnp.matmul(a, b, preferred_element_type=accumulate)


WEIGHT_MAJOR_ROWS = (2, 32)  # rows of `a` (inclusive) for which `product` puts the weight first


def weight_major(a: jax.Array) -> bool:
    """Whether `product(a, b, transpose_b=True)` computes `(b @ a.T).T`: a 2-D `a` of 2-32 rows
    (a decoding step's batch) on the CPU.

    XLA:CPU's dot kernels (YNNPACK) pack their right-hand operand into tiles at every call (its
    `pack_b` step); for `a @ b.T` that is the whole weight, for `b @ a.T` only the few rows of
    `a`. CPU backend only (`Backend.weight_major`); the measurements are in docs/benchmarks.md.
    """
    lo, hi = WEIGHT_MAJOR_ROWS
    return a.ndim == 2 and lo <= a.shape[0] <= hi and backend.active().weight_major
