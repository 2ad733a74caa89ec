"""A strong model whose hypothesis class is a subspace: a linear probe on the concept features.

Charikar, Pabbaraju and Shiragur (NeurIPS 2024) show that a strong model fitting weak labels over
a convex class that contains the target has ``err(f_sw) <= err(f_w) - E(f_sw - f_w)^2`` (squared
loss), with equality when the class is a subspace. Here the class is ``{b in span(B)}`` (a linear
probe on ``z = B x``, which holds ``beta_star``), and everything is exact (``docs/theory.md`` §7):

* population fit: the Sigma-projection ``P beta_weak`` onto span(B);
* Pythagorean identity: ``eps_W^2 = R(P beta_weak) + ||(I - P) beta_weak||_Sigma^2`` (eq. T.20): the
  probe removes the weak bias outside the concepts (the misfit) and keeps the part inside;
* finite n (Gaussian design, n > K + 1): ``E R(b_n) = R(P beta_weak) + s^2 K / (n - K - 1)`` with
  ``s^2 = sigma_weak^2 + misfit``: the bias outside span(B) acts as label noise independent of z
  (eq. T.21), and ``E R(b_n) + E m(b_n) = eps_W^2 + 2 s^2 K / (n - K - 1)`` for the fitted probe's
  misfit ``m(b) = ||b - beta_weak||_Sigma^2`` (eq. T.22).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from theory.estimators import sample_features
from theory.model import Problem
from theory.monte_carlo import label_sources
from w2s_jax.core import excess_risk

__all__ = ["projection", "probe_population", "misfit_population", "probe_variance", "probe_risk", "simulate_probe"]


def projection(p: Problem) -> np.ndarray:
    """``P = B^T (B Sigma B^T)^{-1} B Sigma``: the Sigma-orthogonal projection onto span(B) (host, float64)."""
    B, Sigma = np.asarray(p.B_KxD, np.float64), np.asarray(p.Sigma_DxD, np.float64)
    return B.T @ np.linalg.solve(B @ Sigma @ B.T, B @ Sigma)


def probe_population(p: Problem) -> tuple[np.ndarray, float]:
    """The population probe ``P beta_weak`` and its risk ``R(P beta_weak)`` (the in-span bias squared)."""
    b = projection(p) @ np.asarray(p.beta_weak, np.float64)
    e = b - np.asarray(p.beta_star, np.float64)
    return b, float(e @ np.asarray(p.Sigma_DxD, np.float64) @ e)


def misfit_population(p: Problem) -> float:
    """``E(f_sw - f_w)^2 = ||(I - P) beta_weak||_Sigma^2``: the population probe's disagreement with the weak model."""
    r = np.asarray(p.beta_weak, np.float64) - probe_population(p)[0]
    return float(r @ np.asarray(p.Sigma_DxD, np.float64) @ r)


def probe_variance(p: Problem, n: int) -> float:
    """``V_K(n) = (sigma_weak^2 + misfit) K / (n - K - 1)``: least squares' variance in K dimensions (n > K + 1)."""
    K = p.B_KxD.shape[0]
    if n <= K + 1:
        raise ValueError(f"the probe's least-squares variance needs n > K + 1, got n={n}, K={K}")
    return (float(p.sigma_weak) ** 2 + misfit_population(p)) * K / (n - K - 1)


def probe_risk(p: Problem, n: int) -> float:
    """``E R(b_n) = R(P beta_weak) + V_K(n)`` (eq. T.21)."""
    return probe_population(p)[1] + probe_variance(p, n)


@functools.partial(jax.jit, static_argnames=("ns", "trials", "n_test"))
def simulate_probe(p: Problem, ns: tuple[int, ...], trials: int, n_test: int, *, key: jax.Array) -> dict:
    """Least squares on ``z = B x`` with weak labels, for nested sample sizes ``ns``, per trial.

    Returns ``{"risk_TxN", "misfit_TxN", "misfit_test_TxN"}``: the probe's excess risk (gold, eq. T.4),
    its misfit ``||b - beta_weak||_Sigma^2`` (no gold labels), and the misfit measured on ``n_test``
    fresh unlabelled inputs, ``mean_i ((b - beta_weak)^T x_i)^2`` (what a user can compute).
    """
    n_max = max(ns)
    weak = label_sources(p, 0)["weak"]

    def one(trial_key):
        data_key, weak_key, test_key = jax.random.split(trial_key, 3)
        X_NxD = sample_features(p.Sigma_DxD, n_max, key=data_key)
        y_N = weak(X_NxD, key=weak_key)
        Z_NxK = X_NxD @ p.B_KxD.T
        X_test = sample_features(p.Sigma_DxD, n_test, key=test_key)

        def fit(n):
            w_N = (jnp.arange(n_max) < n).astype(X_NxD.dtype)
            c_K = jnp.linalg.solve((Z_NxK * w_N[:, None]).T @ Z_NxK, (Z_NxK * w_N[:, None]).T @ y_N)
            b_D = c_K @ p.B_KxD
            return (excess_risk(b_D, p.beta_star, p.Sigma_DxD), excess_risk(b_D, p.beta_weak, p.Sigma_DxD),
                    jnp.mean(jnp.square(X_test @ (b_D - p.beta_weak))))

        return jax.vmap(fit)(jnp.asarray(ns))

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(trials))
    risk, misfit, misfit_test = jax.vmap(one)(keys)
    return {"risk_TxN": risk, "misfit_TxN": misfit, "misfit_test_TxN": misfit_test}
