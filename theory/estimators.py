"""Fine-tuning estimators on a finite sample, over a whole hyper-parameter path at once.

Both estimators start from the pre-trained regression function ``beta_P`` and fit labels ``y``:

* ridge towards ``beta_P`` (eq. T.11): ``b(lam) = argmin_b (1/n)||y - X b||^2 + lam ||b - beta_P||^2
  = (A + lam I)^{-1} (c + lam beta_P)`` with ``A = X^T X / n``, ``c = X^T y / n``;
* gradient descent on ``(1/2n)||y - X b||^2`` from ``beta_P`` with step ``lr`` (eq. T.12): in the
  eigenbasis ``A = V diag(a) V^T`` each coordinate is a scalar linear recursion with the closed form
  ``w_t = (1 - lr a)^t w_0 + (1 - (1 - lr a)^t) c~ / a`` (``c~ = 0`` wherever ``a = 0``, since ``c``
  lies in the row space of X), so every step count costs the same.

One eigendecomposition serves the whole path. Pure functions; the caller jits and vmaps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["ridge_path", "gd_path", "sample_features"]


def sample_features(Sigma_DxD: jax.Array, n: int, *, key: jax.Array) -> jax.Array:
    """``X_NxD`` with rows ``x ~ N(0, Sigma)``."""
    L_DxD = jnp.linalg.cholesky(Sigma_DxD)
    z_NxD = jax.random.normal(key, (n, Sigma_DxD.shape[0]), dtype=Sigma_DxD.dtype)
    return z_NxD @ L_DxD.T


def _moments(X_NxD: jax.Array, y_N: jax.Array, w_N: jax.Array | None):
    if w_N is None:
        w_N = jnp.ones(X_NxD.shape[0], X_NxD.dtype)
    n = jnp.sum(w_N)
    Xw_NxD = X_NxD * w_N[:, None]
    A_DxD = Xw_NxD.T @ X_NxD / n
    c_D = Xw_NxD.T @ y_N / n
    a_D, V_DxD = jnp.linalg.eigh(A_DxD)
    return jnp.clip(a_D, 0.0, None), V_DxD, V_DxD.T @ c_D


def ridge_path(
    X_NxD: jax.Array, y_N: jax.Array, beta_P: jax.Array, lam_L: jax.Array, w_N: jax.Array | None = None
) -> jax.Array:
    """Ridge-towards-``beta_P`` solutions for every ``lam`` in ``lam_L`` (eq. T.11). Returns ``b_LxD``.

    ``lam = 0`` is least squares (the minimum-norm-deviation solution from ``beta_P`` when n < d).
    ``w_N`` (0/1) selects the rows in the sample, so several sample sizes share one compiled shape.
    """
    a_D, V_DxD, c_D = _moments(X_NxD, y_N, w_N)
    w0_D = V_DxD.T @ beta_P
    lam_Lx1 = jnp.asarray(lam_L, X_NxD.dtype)[:, None]
    num_LxD = c_D[None, :] + lam_Lx1 * w0_D[None, :]
    den_LxD = a_D[None, :] + lam_Lx1
    # Where a = 0 and lam = 0 the problem is flat along that direction: keep beta_P's coordinate.
    w_LxD = jnp.where(den_LxD > 0, num_LxD / jnp.where(den_LxD > 0, den_LxD, 1.0), w0_D[None, :])
    return w_LxD @ V_DxD.T


def gd_path(
    X_NxD: jax.Array, y_N: jax.Array, beta_P: jax.Array, t_T: jax.Array, lr: float, w_N: jax.Array | None = None
) -> jax.Array:
    """Gradient-descent iterates from ``beta_P`` after each step count in ``t_T`` (eq. T.12). Returns ``b_TxD``.

    ``w_N`` (0/1) selects the rows in the sample, as in :func:`ridge_path`.
    """
    a_D, V_DxD, c_D = _moments(X_NxD, y_N, w_N)
    w0_D = V_DxD.T @ beta_P
    decay_TxD = jnp.power(1.0 - lr * a_D[None, :], jnp.asarray(t_T, X_NxD.dtype)[:, None])
    target_D = jnp.where(a_D > 0, c_D / jnp.where(a_D > 0, a_D, 1.0), w0_D)
    w_TxD = decay_TxD * w0_D[None, :] + (1.0 - decay_TxD) * target_D[None, :]
    return w_TxD @ V_DxD.T
