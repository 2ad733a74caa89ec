"""Fine-tuning estimators on a finite sample, over a whole hyper-parameter path at once.

Both estimators start from the pre-trained regression function ``beta_P`` and fit labels ``y``:

* ridge towards ``beta_P`` (eq. T.11): ``b(lam) = argmin_b (1/n)||y - X b||^2 + lam ||b - beta_P||^2
  = (A + lam I)^{-1} (c + lam beta_P)`` with ``A = X^T X / n``, ``c = X^T y / n``;
* gradient descent on ``(1/2n)||y - X b||^2`` from ``beta_P`` with step ``lr`` (eq. T.12): in the
  eigenbasis ``A = V diag(a) V^T`` each coordinate is a scalar linear recursion with the closed form
  ``w_t = (1 - lr a)^t w_0 + (1 - (1 - lr a)^t) c~ / a`` (``c~ = 0`` wherever ``a = 0``, since ``c``
  lies in the row space of X), so every step count costs the same.

One eigendecomposition of ``A`` serves both paths and every label vector fitted on the same X
(:func:`spectrum`). Pure functions; the caller jits and vmaps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from theory.validation import concrete

__all__ = [
    "ridge_path",
    "gd_path",
    "sample_features",
    "spectrum",
    "rotated_target",
    "ridge_from_spectrum",
    "gd_from_spectrum",
]


def sample_features(Sigma_DxD: jax.Array, n: int, *, key: jax.Array) -> jax.Array:
    """``X_NxD`` with rows ``x ~ N(0, Sigma)``."""
    L_DxD = jnp.linalg.cholesky(Sigma_DxD)
    z_NxD = jax.random.normal(key, (n, Sigma_DxD.shape[0]), dtype=Sigma_DxD.dtype)
    return z_NxD @ L_DxD.T


def spectrum(X_NxD: jax.Array, w_N: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Eigendecomposition ``A = X^T W X / n = V diag(a) V^T`` shared by every label vector and path.

    ``w_N`` (0/1) selects the rows in the sample, so several sample sizes share one compiled shape.
    Eigenvalues below ``D * eps * max(a)`` are round-off of exact zeros (rank ``n < d``) and are set
    to 0, so least squares returns the solution closest to ``beta_P``.
    """
    if w_N is None:
        w_N = jnp.ones(X_NxD.shape[0], X_NxD.dtype)
    n = jnp.sum(w_N)
    A_DxD = (X_NxD * w_N[:, None]).T @ X_NxD / n
    a_D, V_DxD = jnp.linalg.eigh(A_DxD)
    tol = X_NxD.shape[1] * jnp.finfo(X_NxD.dtype).eps * jnp.max(jnp.abs(a_D))
    return jnp.where(a_D > tol, a_D, 0.0), V_DxD


def rotated_target(X_NxD: jax.Array, y_N: jax.Array, V_DxD: jax.Array, w_N: jax.Array | None = None) -> jax.Array:
    """``V^T c`` with ``c = X^T W y / n``: the label moment in the eigenbasis of :func:`spectrum`."""
    if w_N is None:
        w_N = jnp.ones(X_NxD.shape[0], X_NxD.dtype)
    return V_DxD.T @ ((X_NxD * w_N[:, None]).T @ y_N / jnp.sum(w_N))


def ridge_from_spectrum(a_D, V_DxD, c_D, beta_P, lam_L) -> jax.Array:
    """Ridge path (eq. T.11) from a precomputed :func:`spectrum` and :func:`rotated_target`."""
    w0_D = V_DxD.T @ beta_P
    lam_Lx1 = jnp.asarray(lam_L, a_D.dtype)[:, None]
    num_LxD = c_D[None, :] + lam_Lx1 * w0_D[None, :]
    den_LxD = a_D[None, :] + lam_Lx1
    # Where a = 0 and lam = 0 the problem is flat along that direction: keep beta_P's coordinate.
    w_LxD = jnp.where(den_LxD > 0, num_LxD / jnp.where(den_LxD > 0, den_LxD, 1.0), w0_D[None, :])
    # A NaN or negative strength would fall into the branch above and pass for beta_P: make it NaN.
    valid_Lx1 = jnp.isfinite(lam_Lx1) & (lam_Lx1 >= 0)
    return jnp.where(valid_Lx1, w_LxD @ V_DxD.T, jnp.nan)


def gd_from_spectrum(a_D, V_DxD, c_D, beta_P, t_T, lr) -> jax.Array:
    """Gradient-descent path (eq. T.12) from a precomputed :func:`spectrum` and :func:`rotated_target`."""
    w0_D = V_DxD.T @ beta_P
    decay_TxD = jnp.power(1.0 - lr * a_D[None, :], jnp.asarray(t_T, a_D.dtype)[:, None])
    target_D = jnp.where(a_D > 0, c_D / jnp.where(a_D > 0, a_D, 1.0), w0_D)
    w_TxD = decay_TxD * w0_D[None, :] + (1.0 - decay_TxD) * target_D[None, :]
    return w_TxD @ V_DxD.T


def ridge_path(
    X_NxD: jax.Array, y_N: jax.Array, beta_P: jax.Array, lam_L: jax.Array, w_N: jax.Array | None = None
) -> jax.Array:
    """Ridge-towards-``beta_P`` solutions for every ``lam`` in ``lam_L`` (eq. T.11). Returns ``b_LxD``.

    ``lam = 0`` is least squares (the minimum-norm-deviation solution from ``beta_P`` when n < d).
    ``w_N`` (0/1) selects the rows in the sample, so several sample sizes share one compiled shape.

    Raises:
      ValueError: when a known ``lam`` is negative, NaN or infinite (traced ones give NaN rows).
    """
    lam = concrete(lam_L)
    if lam is not None and not np.all(np.isfinite(lam) & (lam >= 0)):
        raise ValueError(f"lam_L must be finite and >= 0, got lam_L={np.atleast_1d(lam).tolist()}")
    a_D, V_DxD = spectrum(X_NxD, w_N)
    return ridge_from_spectrum(a_D, V_DxD, rotated_target(X_NxD, y_N, V_DxD, w_N), beta_P, lam_L)


def gd_path(
    X_NxD: jax.Array, y_N: jax.Array, beta_P: jax.Array, t_T: jax.Array, lr: float, w_N: jax.Array | None = None
) -> jax.Array:
    """Gradient-descent iterates from ``beta_P`` after each step count in ``t_T`` (eq. T.12). Returns ``b_TxD``.

    ``w_N`` (0/1) selects the rows in the sample, as in :func:`ridge_path`.

    Raises:
      ValueError: when ``lr`` and ``X`` are known and ``lr`` is not in ``(0, 2 / lambda_max(A)]``,
        ``A = X^T W X / n``: beyond it the iterates diverge geometrically along A's top eigenvector.
    """
    a_D, V_DxD = spectrum(X_NxD, w_N)
    step, a_max = concrete(lr), concrete(jnp.max(a_D))
    if step is not None and (step.ndim or not np.isfinite(step) or step <= 0):
        raise ValueError(f"lr must be a finite number > 0, got lr={step.tolist()}")
    if step is not None and a_max is not None and step * a_max > 2:
        raise ValueError(f"lr={float(step)} exceeds the stability limit 2 / lambda_max(A) = {2 / float(a_max):.6g} "
                         f"(lambda_max(A) = {float(a_max):.6g}, A = X^T X / n): gradient descent diverges")
    return gd_from_spectrum(a_D, V_DxD, rotated_target(X_NxD, y_N, V_DxD, w_N), beta_P, t_T, lr)
