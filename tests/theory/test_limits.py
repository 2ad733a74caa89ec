"""Limits that must agree (each path at t = 0 and t -> inf, lam = 0 and lam -> inf) and population
closed forms vs the finite-sample estimators at huge n."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory import closed_form as cf
from theory.estimators import gd_path, ridge_path, sample_features
from theory.model import Biased, ConceptModel, Misaligned, Noisy, make_problem
from theory.monte_carlo import label_sources
from w2s_jax.core import RefinedLabels, WeakLabels, excess_risk

CASES = {
    "biased": (ConceptModel(d=20, K=5, sigma=0.5), Biased(delta=1.0)),
    "noisy": (ConceptModel(d=6, K=3, sigma=0.5), Noisy(eta=1.0)),
    "misaligned": (ConceptModel(d=8, K=4, sigma=0.5, alpha=(0.4, 0.3, 0.2, 0.1)), Misaligned(gamma=0.3, delta=0.5)),
}


def _weak_sample(p, n, seed):
    kx, ky = jax.random.split(jax.random.key(seed))
    X = sample_features(p.Sigma_DxD, n, key=kx)
    return X, WeakLabels(p.beta_weak, p.sigma_weak)(X, key=ky)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ridge_population_formula_for_identity_sigma(case):
    p = make_problem(*CASES[case])
    lam_L = jnp.asarray([0.0, 1e-3, 0.1, 1.0, 7.0, 1e3])
    b_LxD, risk_L = cf.ridge_population(p, lam_L)
    e = (p.beta_weak - p.beta_star)[None] + lam_L[:, None] * (p.beta_P - p.beta_star)[None]
    expected = jnp.sum(e**2, axis=-1) / (1 + lam_L) ** 2
    np.testing.assert_allclose(np.asarray(risk_L), np.asarray(expected), rtol=1e-12, atol=1e-14)
    # lam -> 0: the weak fit; lam -> inf: beta_P.
    np.testing.assert_allclose(np.asarray(b_LxD[0]), np.asarray(p.beta_weak), atol=1e-14)
    b_far, _ = cf.ridge_population(p, jnp.asarray([1e12]))
    np.testing.assert_allclose(np.asarray(b_far[0]), np.asarray(p.beta_P), atol=1e-11)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gd_population_lies_on_the_segment(case):
    p = make_problem(*CASES[case])
    lr, t_T = 0.2, jnp.asarray([0, 1, 2, 5, 20, 100, 1000])
    b_TxD, _ = cf.gd_population(p, t_T, lr)
    s_T = 1 - (1 - lr) ** t_T  # fraction of the way from beta_P to beta_weak
    on_segment = (1 - s_T)[:, None] * p.beta_P + s_T[:, None] * p.beta_weak
    np.testing.assert_allclose(np.asarray(b_TxD), np.asarray(on_segment), atol=1e-14)
    np.testing.assert_allclose(np.asarray(b_TxD[0]), np.asarray(p.beta_P), atol=1e-15)  # t = 0 is beta_P
    np.testing.assert_allclose(np.asarray(b_TxD[-1]), np.asarray(p.beta_weak), atol=1e-12)  # t -> inf


@pytest.mark.parametrize("case", ["biased", "misaligned"])
def test_population_paths_match_finite_sample_at_huge_n(case):
    """n = 200000, one trial: sampling error ~ sqrt(d / n) ~ 1e-2 in b, so risks agree to ~1e-2."""
    p = make_problem(*CASES[case])
    X, y = _weak_sample(p, 200_000, seed=1)
    lam_L, t_T, lr = jnp.asarray([1e-3, 0.1, 1.0, 10.0]), jnp.asarray([0, 1, 3, 10, 50]), 0.2
    b_fin = ridge_path(X, y, p.beta_P, lam_L)
    b_pop, r_pop = cf.ridge_population(p, lam_L)
    assert float(jnp.max(jnp.abs(b_fin - b_pop))) < 1e-2
    np.testing.assert_allclose(np.asarray(excess_risk(b_fin, p.beta_star)), np.asarray(r_pop), atol=1e-2)
    g_fin = gd_path(X, y, p.beta_P, t_T, lr)
    g_pop, r_gpop = cf.gd_population(p, t_T, lr)
    assert float(jnp.max(jnp.abs(g_fin - g_pop))) < 1e-2
    np.testing.assert_allclose(np.asarray(excess_risk(g_fin, p.beta_star)), np.asarray(r_gpop), atol=1e-2)


@pytest.mark.parametrize("case", sorted(CASES))
def test_finite_sample_limits(case):
    """lam -> 0 is least squares; lam -> inf is beta_P; GD at t = 0 is beta_P; GD run long is lam = 0."""
    p = make_problem(*CASES[case])
    d = p.beta_P.shape[0]
    X, y = _weak_sample(p, 3 * d, seed=2)
    ls, *_ = np.linalg.lstsq(np.asarray(X), np.asarray(y), rcond=None)
    b = ridge_path(X, y, p.beta_P, jnp.asarray([0.0, 1e12]))
    np.testing.assert_allclose(np.asarray(b[0]), ls, atol=1e-10)
    np.testing.assert_allclose(np.asarray(b[1]), np.asarray(p.beta_P), atol=1e-9)
    g = gd_path(X, y, p.beta_P, jnp.asarray([0, 1, 200_000]), 0.2)
    np.testing.assert_allclose(np.asarray(g[0]), np.asarray(p.beta_P), atol=1e-14)
    np.testing.assert_allclose(np.asarray(g[2]), ls, atol=1e-10)
    # One explicit step of gradient descent on (1/2n)||y - Xb||^2.
    Xn, bP = np.asarray(X), np.asarray(p.beta_P)
    step = bP - 0.2 * Xn.T @ (Xn @ bP - np.asarray(y)) / Xn.shape[0]
    np.testing.assert_allclose(np.asarray(g[1]), step, atol=1e-12)


def test_gd_long_run_is_min_norm_least_squares_when_n_below_d():
    p = make_problem(*CASES["biased"])
    X, y = _weak_sample(p, 8, seed=3)
    ref = np.asarray(p.beta_P) + np.linalg.pinv(np.asarray(X)) @ (np.asarray(y) - np.asarray(X) @ np.asarray(p.beta_P))
    g = gd_path(X, y, p.beta_P, jnp.asarray([10**6]), 0.2)
    np.testing.assert_allclose(np.asarray(g[0]), ref, atol=1e-8)


def test_ridge_at_lam_zero_is_min_norm_least_squares_when_n_below_d():
    p = make_problem(*CASES["biased"])
    X, y = _weak_sample(p, 8, seed=3)
    ref = np.asarray(p.beta_P) + np.linalg.pinv(np.asarray(X)) @ (np.asarray(y) - np.asarray(X) @ np.asarray(p.beta_P))
    b = ridge_path(X, y, p.beta_P, jnp.asarray([0.0]))
    np.testing.assert_allclose(np.asarray(b[0]), ref, atol=1e-8)


@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_demonstrations_give_the_prior_regression_function(case):
    """n_icl = 0, mean readout: refined labels are beta_P^T x exactly, and refinement's risk is eps_P^2."""
    p = make_problem(*CASES[case])
    X = sample_features(p.Sigma_DxD, 50, key=jax.random.key(4))
    refined = label_sources(p, 0)["refined"]
    assert isinstance(refined, RefinedLabels) and refined.n_icl == 0
    np.testing.assert_allclose(np.asarray(refined(X, key=jax.random.key(5))), np.asarray(X @ p.beta_P), atol=1e-14)
    assert float(cf.refine_population(p, p.alpha_K)) == pytest.approx(float(cf.eps_P2(p)), abs=1e-14)
    assert float(cf.chernoff_bound(p, 0)) == 1.0
