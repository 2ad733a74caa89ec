"""`models/matmul.py`: the product every layer calls, including its weight-first form for a few
rows on the CPU, checked against numpy in float64 and in the compiled program's operand order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.models.matmul import WEIGHT_MAJOR_ROWS, matmul, product, weight_major


@pytest.mark.parametrize("rows, expected", [(1, False), (2, True), (16, True), (32, True), (33, False),
                                            (64, False), (1024, False)])
def test_weight_major_is_for_a_few_rows(rows, expected):
    assert WEIGHT_MAJOR_ROWS == (2, 32)
    assert weight_major(jnp.zeros((rows, 8))) is expected
    assert not weight_major(jnp.zeros((2, rows, 8)))  # batched operands keep the usual order


@pytest.mark.parametrize("rows", [1, 3, 16, 40])
@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_transposed_product_equals_numpy_at_every_row_count(rows, dtype, tol):
    rng = np.random.default_rng(rows)
    a = jnp.asarray(rng.normal(size=(rows, 48)), dtype)
    w_OxI = jnp.asarray(rng.normal(size=(96, 48)), dtype)
    got = jax.jit(lambda a, w: matmul(a, w, transpose_b=True))(a, w_OxI)
    assert got.shape == (rows, 96) and got.dtype == dtype
    expected = np.asarray(a, np.float64) @ np.asarray(w_OxI, np.float64).T
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=tol, atol=tol * 7)


def test_a_few_rows_put_the_weight_first_in_the_compiled_program():
    """16 rows: the dot's left operand is the 96 x 48 weight (its output 96 x 16); one row and
    64 rows keep `a @ w.T` (output rows x 96)."""

    def dot_shapes(rows):
        a, w = jnp.ones((rows, 48)), jnp.ones((96, 48))
        hlo = jax.jit(lambda a, w: product(a, w, transpose_b=True)).lower(a, w).compile().as_text()
        return [line.split("=")[1].split()[0] for line in hlo.splitlines() if " dot(" in line]

    assert dot_shapes(16) == ["f32[96,16]{1,0}"]
    assert dot_shapes(1) == ["f32[1,96]{1,0}"]
    assert dot_shapes(64) == ["f32[64,96]{1,0}"]
