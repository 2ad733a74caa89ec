"""Label sources: who labels the training set (gold, weak, refined), as small strategies.

Each source is a frozen dataclass registered as a JAX pytree (its arrays are traced, its
settings static), called as ``source(X_NxD, key=key) -> y_N``. The latent-concept model of
``docs/theory.md`` supplies the three the paper compares:

* :class:`GoldLabels`:  ``y = beta_star^T x + sigma eps`` (the ceiling's supervision);
* :class:`WeakLabels`:  ``y' = beta_weak^T x + sigma_weak eps`` (the weak supervisor);
* :class:`RefinedLabels`: for each ``x_i`` the strong model sees ``n_icl`` fresh weak-labelled
  demonstrations ``D_i``, forms its posterior over concepts ``pi(D_i)`` (eq. T.6), and emits
  ``sum_k w_k beta_k^T x_i`` with ``w`` from a :mod:`~w2s_jax.core.posterior` readout (eq. T.8).

A new labelling method is a new small class with the same call signature.

Refinement is simulated exactly and cheaply through the residuals: the posterior depends on the
demonstrations only through ``r_jk = y'_j - beta_k^T x_j``, and the vector ``r_j in R^K`` is
Gaussian with covariance ``C = R Sigma R^T + sigma_weak^2 11^T``, ``R_k = beta_weak - beta_k``
(eq. T.7). Sampling ``r_j`` directly costs ``O(K^2)`` per demonstration instead of ``O(d)``, and has
exactly the law of the explicit simulation (a test checks the two against each other).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator

import jax
import jax.numpy as jnp

from w2s_jax.core.posterior import PosteriorMean, Readout, concept_log_posterior

__all__ = [
    "GoldLabels",
    "WeakLabels",
    "RefinedLabels",
    "residual_covariance",
]


def _standard_normal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """``jax.random.normal`` drawn flat, then reshaped: the same law, but XLA:CPU's threefry runs
    1.6x slower per number when the minor axis is short (e.g. ``K = 5``; 57 vs 35 ns measured)."""
    return jax.random.normal(key, (math.prod(shape),), dtype=dtype).reshape(shape)


def _linear_gaussian(beta_D: jax.Array, sigma: jax.Array, X_NxD: jax.Array, key: jax.Array) -> jax.Array:
    if X_NxD.shape[-1] != beta_D.shape[-1]:
        raise ValueError(f"X_NxD has {X_NxD.shape[-1]} features but beta_D has {beta_D.shape[-1]}")
    noise_N = jax.random.normal(key, X_NxD.shape[:-1], dtype=X_NxD.dtype)
    return X_NxD @ beta_D + sigma * noise_N


@functools.partial(jax.tree_util.register_dataclass, data_fields=["beta_star", "sigma"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class GoldLabels:
    """Gold labels from the target concept: ``y = beta_star^T x + sigma eps`` (eq. T.2)."""

    beta_star: jax.Array
    sigma: jax.Array

    name = "gold"

    def __call__(self, X_NxD: jax.Array, *, key: jax.Array) -> jax.Array:
        return _linear_gaussian(self.beta_star, self.sigma, X_NxD, key)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["beta_weak", "sigma_weak"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class WeakLabels:
    """Weak supervisor labels: ``y' = beta_weak^T x + sigma_weak eps`` (eq. T.3)."""

    beta_weak: jax.Array
    sigma_weak: jax.Array

    name = "weak"

    def __call__(self, X_NxD: jax.Array, *, key: jax.Array) -> jax.Array:
        return _linear_gaussian(self.beta_weak, self.sigma_weak, X_NxD, key)


def residual_covariance(weak: WeakLabels, B_KxD: jax.Array, Sigma_DxD: jax.Array) -> jax.Array:
    """Covariance of the demonstration residuals ``r_k = y' - beta_k^T x`` over concepts (eq. T.7).

    ``C_kl = (beta_weak - beta_k)^T Sigma (beta_weak - beta_l) + sigma_weak^2``.
    """
    R_KxD = weak.beta_weak[None, :] - B_KxD
    return R_KxD @ Sigma_DxD @ R_KxD.T + jnp.square(weak.sigma_weak)


def _psd_sqrt(C_KxK: jax.Array) -> jax.Array:
    """A factor ``L`` with ``L L^T = C`` that tolerates a singular PSD ``C`` (e.g. ``sigma_weak = 0``)."""
    eigvals_K, V_KxK = jnp.linalg.eigh(C_KxK)
    return V_KxK * jnp.sqrt(jnp.clip(eigvals_K, 0.0, None))[None, :]


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["weak", "B_KxD", "log_alpha_K", "sigma", "Sigma_DxD"],
    meta_fields=["n_icl", "readout"],
)
@dataclasses.dataclass(frozen=True)
class RefinedLabels:
    """Labels from the strong model's posterior given ``n_icl`` weak demonstrations (eq. T.8).

    Attributes:
      weak: the weak supervisor that labels the demonstrations.
      B_KxD: the strong model's concepts (rows ``beta_k``).
      log_alpha_K: log prior over concepts.
      sigma: the strong model's noise scale (its likelihood ``N(y; beta_k^T x, sigma^2)``).
      Sigma_DxD: feature covariance of the demonstrations' inputs.
      n_icl: number of demonstrations per relabelled example (static; 0 gives the prior).
      readout: how the posterior becomes a label (static strategy).
    """

    weak: WeakLabels
    B_KxD: jax.Array
    log_alpha_K: jax.Array
    sigma: jax.Array
    Sigma_DxD: jax.Array
    n_icl: int
    readout: Readout = PosteriorMean()

    name = "refined"

    def __post_init__(self):
        try:
            n_icl = operator.index(self.n_icl)  # ints and numpy integers; n_icl fixes array shapes
        except TypeError:
            raise TypeError(f"n_icl must be an integer, got {self.n_icl!r}") from None
        if n_icl < 0:
            raise ValueError(f"n_icl must be >= 0, got n_icl={n_icl}")

    def _loglik_KxNxJ(self, num: int, key: jax.Array) -> jax.Array:
        """``-r_jk^2 / (2 sigma^2)`` for ``num`` sets of ``n_icl`` residual vectors ``r_j = L z_j`` (eq. T.7).

        Concepts lead (``K x N x J``): XLA:CPU draws and transforms this layout fastest (the law
        does not depend on it).
        """
        K = self.B_KxD.shape[0]
        L_KxK = _psd_sqrt(residual_covariance(self.weak, self.B_KxD, self.Sigma_DxD))
        z_KxNJ = _standard_normal(key, (K, num * self.n_icl), self.B_KxD.dtype)
        r_KxNxJ = (L_KxK @ z_KxNJ).reshape(K, num, self.n_icl)
        # log N(y'; beta_k^T x, sigma^2) up to a constant shared by all k.
        return -0.5 * jnp.square(r_KxNxJ) / jnp.square(self.sigma)

    def log_posterior_path(self, num: int, *, key: jax.Array) -> jax.Array:
        """Log posteriors after the first ``j = 0..n_icl`` demonstrations of ``num`` nested sets.

        Returns:
          ``log_pi_NxJxK`` with ``J = n_icl + 1``; slice ``[:, j]`` has the exact law of the
          posterior after ``j`` demonstrations (the sets are nested prefixes of one draw).
        """
        loglik_NxJxK = jnp.cumsum(self._loglik_KxNxJ(num, key), axis=2).transpose(1, 2, 0)
        zeros_Nx1xK = jnp.zeros((num, 1, loglik_NxJxK.shape[-1]), dtype=loglik_NxJxK.dtype)
        return concept_log_posterior(self.log_alpha_K, jnp.concatenate([zeros_Nx1xK, loglik_NxJxK], axis=1))

    def log_posterior(self, num: int, *, key: jax.Array) -> jax.Array:
        """``log_pi_NxK``: each of ``num`` examples' posterior after its ``n_icl`` demonstrations.

        Equal to ``log_posterior_path(num, key=key)[:, -1]`` (same draw), without the path.
        """
        loglik_NxK = jnp.sum(self._loglik_KxNxJ(num, key), axis=2).T
        return concept_log_posterior(self.log_alpha_K, loglik_NxK)

    def __call__(self, X_NxD: jax.Array, *, key: jax.Array) -> jax.Array:
        demo_key, readout_key = jax.random.split(key)
        log_pi_NxK = self.log_posterior(X_NxD.shape[0], key=demo_key)
        w_NxK = self.readout.weights(log_pi_NxK, key=readout_key)
        return jnp.sum(w_NxK * (X_NxD @ self.B_KxD.T), axis=-1)
