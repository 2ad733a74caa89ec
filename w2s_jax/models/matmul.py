"""The matmul every model layer calls: `a @ b`, with 16-bit floats accumulated in float32.

For bfloat16 (or float16) operands the product is accumulated in float32 and rounded once to the
operands' dtype, as PyTorch does on CPU and accelerators do in hardware; written this way XLA:CPU
also takes its fast 16-bit path, which a plain 16-bit `a @ b` does not. XLA:CPU's fast path needs
two or more rows, so on the CPU backend a lone row is padded with a zero row
(`Backend.pad_single_row`). Other dtypes: plain `a @ b`. The measurements are in docs/benchmarks.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from w2s_jax.models import backend

SIXTEEN_BIT = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
WEIGHT_PRODUCT = "weight_product"  # the name of a 16-bit product by a 2-D weight, for remat policies


def matmul(a: jax.Array, b: jax.Array, *, transpose_b: bool = False) -> jax.Array:
    """`a @ b` (numpy matmul semantics, batch axes leading), or `a @ b.T` for a 2-D `b` stored
    (out, in) with `transpose_b` (contracted in place: XLA:CPU's 16-bit path does not fold a
    transpose of `b` into the product). 16-bit floats: see the module docstring; their backward
    products are 16-bit too."""
    if _differentiable_16bit(a, b, transpose_b):
        return _matmul_16bit(a, b, transpose_b)
    return matmul_with(a, b.dtype, lambda a, accumulate: product(a, b, transpose_b=transpose_b, accumulate=accumulate))


def _differentiable_16bit(a: jax.Array, b: jax.Array, transpose_b: bool) -> bool:
    # the shapes the layers pass: a 2-D weight, or batched operands with equal batch axes
    same_batch = b.ndim == 2 or (not transpose_b and a.shape[:-2] == b.shape[:-2])
    return a.dtype == b.dtype and a.dtype in SIXTEEN_BIT and a.ndim >= 2 and b.ndim >= 2 and same_batch


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_16bit(a: jax.Array, b: jax.Array, transpose_b: bool) -> jax.Array:
    """`matmul` of 16-bit operands, whose gradients are 16-bit products as well.

    Autodiff of the float32-accumulating product would carry a float32 cotangent and run both
    backward products in float32 (the 16-bit operand converted); here the cotangent is the 16-bit
    output's, and each backward product reads 16-bit operands, accumulates in float32 and rounds
    once, as the forward product does.
    """
    return matmul_with(a, b.dtype, lambda a, accumulate: product(a, b, transpose_b=transpose_b, accumulate=accumulate))


def _matmul_16bit_fwd(a, b, transpose_b):
    y = _matmul_16bit(a, b, transpose_b)
    if b.ndim == 2:  # a remat policy cannot see the dot inside a custom VJP; it can see the name
        y = checkpoint_name(y, WEIGHT_PRODUCT)
    return y, (a, b)


def _matmul_16bit_bwd(transpose_b, residuals, dy):
    a, b = residuals
    dy = dy.astype(a.dtype)
    last = dy.ndim - 1

    def dot(x, y, contract, batch=0):
        axes = tuple(range(batch))
        return jax.lax.dot_general(x, y, ((contract[:1], contract[1:]), (axes, axes)),
                                   preferred_element_type=jnp.float32)

    def rows(x):  # every axis but the last as rows
        return x.reshape(-1, x.shape[-1])

    if transpose_b:  # y = a @ b.T with b stored (out, in)
        da = dot(dy, b, (last, 0))
        db = dot(rows(dy), rows(a), (0, 0))  # out x in
    elif b.ndim == 2:  # y = a @ b
        da = dot(dy, b, (last, 1))
        db = dot(rows(a), rows(dy), (0, 0))  # in x out, summed over every row of a
    else:  # batched: b's batch axes are a's
        batch = b.ndim - 2
        da = dot(dy, b, (last, b.ndim - 1), batch)
        db = dot(a, dy, (a.ndim - 2, dy.ndim - 2), batch)
    return da.astype(a.dtype), db.astype(b.dtype)


_matmul_16bit.defvjp(_matmul_16bit_fwd, _matmul_16bit_bwd)


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
