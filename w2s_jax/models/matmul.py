"""The matmul every model layer calls: `a @ b`, with 16-bit floats accumulated in float32.

For bfloat16 (or float16) operands the product is accumulated in float32 and rounded once to the
operands' dtype, as PyTorch does on CPU and accelerators do in hardware. Written this way XLA:CPU
takes its fast 16-bit path; a plain 16-bit `a @ b` ran ~10x slower (2048 x 8192 bf16 weight, one
core: 3.2 ms against 31.8 ms for 16 rows; float32 weights: 10.8 ms), and rounds the same values
(max error against a float64 product identical, 0.01097, at 1, 2 and 16 rows). XLA:CPU's fast
path needs two or more rows: a single bf16 row (a decoding step at batch 1) took 21.6 ms, two
rows 3.3 ms, so on the CPU a lone row is padded with a zero row. Other dtypes: plain `a @ b`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SIXTEEN_BIT = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def matmul(a: jax.Array, b: jax.Array, *, transpose_b: bool = False) -> jax.Array:
    """`a @ b` (numpy matmul semantics, batch axes leading), or `a @ b.T` for a 2-D `b` stored
    (out, in) with `transpose_b` (contracted in place: XLA:CPU's 16-bit path does not fold a
    transpose of `b` into the product, 91 against 7.8 ms for a 32768 x 2048 bf16 head at two
    rows). 16-bit floats: see the module docstring."""
    return matmul_with(a, b.dtype, lambda a, accumulate: product(a, b, transpose_b=transpose_b, accumulate=accumulate))


def matmul_with(a: jax.Array, b_dtype, product_fn) -> jax.Array:
    """`matmul` around a product of one's own: `product_fn(a, accumulate)` multiplies the
    (possibly padded) `a` by a `b_dtype` operand with `product(..., accumulate=accumulate)`.
    `layer_weights.LayerWeight` passes a switch over per-layer weights, so the padding and the
    rounding sit outside its branches, each branch one product (less code to compile)."""
    sixteen_bit = a.dtype == jnp.dtype(b_dtype) and a.dtype in SIXTEEN_BIT and a.ndim >= 2
    pad = sixteen_bit and a.shape[-2] == 1 and jax.default_backend() == "cpu"
    if pad:
        a = jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, 1), (0, 0)])
    y = product_fn(a, jnp.float32 if sixteen_bit else None)
    if pad:
        y = y[..., :1, :]
    return y.astype(a.dtype) if sixteen_bit else y


def product(a: jax.Array, b: jax.Array, *, transpose_b: bool = False, accumulate=None) -> jax.Array:
    """`a @ b` (or `a @ b.T`, 2-D `b`) accumulated in `accumulate` (None: the operands' dtype)."""
    if transpose_b:
        if b.ndim != 2:
            raise ValueError(f"transpose_b needs a 2-D b, got shape {b.shape}")
        return jax.lax.dot_general(a, b, (((a.ndim - 1,), (1,)), ((), ())), preferred_element_type=accumulate)
    return jnp.matmul(a, b, preferred_element_type=accumulate)
