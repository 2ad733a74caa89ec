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
    sixteen_bit = a.dtype == b.dtype and a.dtype in SIXTEEN_BIT and a.ndim >= 2
    pad = sixteen_bit and a.shape[-2] == 1 and jax.default_backend() == "cpu"
    if pad:
        a = jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, 1), (0, 0)])
    accumulate = jnp.float32 if sixteen_bit else None
    if transpose_b:
        if b.ndim != 2:
            raise ValueError(f"transpose_b needs a 2-D b, got shape {b.shape}")
        y = jax.lax.dot_general(a, b, (((a.ndim - 1,), (1,)), ((), ())), preferred_element_type=accumulate)
    else:
        y = jnp.matmul(a, b, preferred_element_type=accumulate)
    if pad:
        y = y[..., :1, :]
    return y.astype(a.dtype) if sixteen_bit else y
