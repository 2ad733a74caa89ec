"""Closed forms against Monte Carlo: every tolerance is 4 Monte Carlo standard errors (plus
float64 round-off), never a guessed constant.

* exact finite-n OLS risk ``sigma^2 d / (n - d - 1)`` (Gaussian design) vs ``simulate_fits`` at lam 0;
* ``simulate_posterior`` (the residual trick of ``RefinedLabels``) vs an explicit brute-force
  simulation that samples ``x_j in R^d`` and weak labels and applies the posterior formula;
* ``refine_population(E[pi])`` vs Monte Carlo refine-then-fit at large n;
* the default setting's headline numbers (eps_P^2 = 0.8, eps_W^2 = 1, bound 4/9, refinement risk).
"""

import jax
import numpy as np
import pytest

from theory import closed_form as cf
from theory.model import Biased, ConceptModel, Misaligned, Noisy, make_problem, stack_problems
from theory.monte_carlo import FitSettings, simulate_fits, simulate_posterior
from w2s_jax.core import mean_and_se

Z = 4.0  # tolerance in standard errors; two-sided tail 6e-5 per comparison, seeds are fixed

SUPERVISORS = {
    "biased": Biased(delta=1.0),
    "noisy": Noisy(eta=1.0),
    "misaligned": Misaligned(gamma=0.3, delta=0.5),
}


def test_ols_risk_matches_exact_finite_n_expectation():
    """lam = 0 is OLS: E R = R(beta_label) + sigma_label^2 d / (n - d - 1), exactly, for any n > d + 1.

    The supervisors are stacked and vmapped through one compiled simulation (a parameter grid).
    Biased(delta=0) is the limit where naive fine-tuning is consistent: its risk is the OLS variance
    alone, which goes to 0 with n.
    """
    d, K, ns = 20, 5, (24, 40, 120)
    supervisors = dict(SUPERVISORS, unbiased=Biased(delta=0.0))
    names = sorted(supervisors)
    problems = [make_problem(ConceptModel(d=d, K=K, sigma=0.5), supervisors[k]) for k in names]
    s = FitSettings(ns=ns, trials=2000, lams=(0.0, 1e-3), steps=(0,), n_icl=0)
    out = jax.vmap(lambda p: simulate_fits(p, s, key=jax.random.key(11)))(stack_problems(problems))
    for i, (name, p) in enumerate(zip(names, problems)):
        for j, n in enumerate(ns):
            cases = {
                "gold/ridge": (cf.ols_excess_risk(n, d, p.sigma), 0.0),
                "weak/ridge": (cf.ols_excess_risk(n, d, p.sigma_weak), cf.eps_W2(p)),
            }
            for source, (variance, bias) in cases.items():
                mean, se = mean_and_se(out[source][i, :, j, 0])
                expected = float(variance + bias)
                assert abs(mean - expected) <= Z * se + 1e-12, (name, n, source, mean, expected, se)
    unbiased = np.asarray(out["weak/ridge"][names.index("unbiased"), :, :, 0]).mean(axis=0)
    assert unbiased[-1] < 0.1 * unbiased[0] and np.all(np.diff(unbiased) < 0), unbiased


def _brute_force_posterior(model: ConceptModel, p, n_max: int, draws: int, seed: int):
    """``pi(D)`` for nested demonstration sets, sampled explicitly: x_j ~ N(0, Sigma) in R^d,
    y'_j = beta_weak^T x_j + sigma_weak eps_j, log pi_k = log alpha_k - sum_j (y'_j - beta_k^T x_j)^2
    / (2 sigma^2) - log Z. Returns ``pi_MxJxK`` for j = 0..n_max."""
    rng = np.random.default_rng(seed)
    B = np.asarray(p.B_KxD)
    scales = np.sqrt(np.diag(np.asarray(p.Sigma_DxD)))
    x = rng.standard_normal((draws, n_max, model.d)) * scales
    y = x @ np.asarray(p.beta_weak) + float(p.sigma_weak) * rng.standard_normal((draws, n_max))
    r = y[..., None] - x @ B.T
    loglik = -0.5 * np.cumsum(r**2, axis=1) / float(p.sigma) ** 2
    loglik = np.concatenate([np.zeros((draws, 1, model.K)), loglik], axis=1)
    logits = np.log(np.asarray(p.alpha_K)) + loglik
    logits -= logits.max(axis=-1, keepdims=True)
    pi = np.exp(logits)
    return pi / pi.sum(axis=-1, keepdims=True)


POSTERIOR_CASES = {
    "biased": (ConceptModel(d=8, K=4, sigma=0.5), Biased(delta=1.0)),
    "noisy": (ConceptModel(d=8, K=4, sigma=0.5), Noisy(eta=1.5)),
    "misaligned": (ConceptModel(d=8, K=4, sigma=0.5), Misaligned(gamma=0.35, delta=0.5, j=2)),
    "nonuniform_alpha": (ConceptModel(d=8, K=4, sigma=0.7, alpha=(0.1, 0.5, 0.3, 0.1)), Biased(delta=0.5)),
    "feature_scales": (
        ConceptModel(d=8, K=4, sigma=0.5, feature_scales=(1.5, 0.5, 1.0, 2.0, 0.7, 1.0, 1.0, 1.0)),
        Misaligned(gamma=0.2, delta=1.0),
    ),
}


@pytest.mark.parametrize("case", sorted(POSTERIOR_CASES))
def test_simulate_posterior_matches_brute_force(case):
    """Validates the residual trick: sampling r in R^K with covariance C has the explicit law."""
    model, sup = POSTERIOR_CASES[case]
    p = make_problem(model, sup)
    n_max, draws = 60, 20000  # shapes shared with the Chernoff tests (one compile)
    post = simulate_posterior(p, n_max, draws, key=jax.random.key(3))
    pi_ref = _brute_force_posterior(model, p, n_max, draws, seed=5)
    E_ref = pi_ref.mean(axis=0)
    se_ref = pi_ref.std(axis=0, ddof=1) / np.sqrt(draws)
    E_jax = np.asarray(post["E_pi_JxK"])
    se_jax = np.sqrt(np.diagonal(np.asarray(post["cov_pi_JxKxK"]), axis1=1, axis2=2) / draws)
    tol = Z * np.sqrt(se_ref**2 + se_jax**2) + 1e-12
    assert np.all(np.abs(E_jax - E_ref) <= tol), np.max(np.abs(E_jax - E_ref) / tol)
    # j = 0 is the prior exactly, and the error column is 1 - E[pi_star].
    np.testing.assert_allclose(E_jax[0], np.asarray(p.alpha_K), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(post["err_J"]), 1 - E_jax[:, model.k_star], atol=1e-12)
    err_ref = 1 - pi_ref[..., model.k_star]
    err_se = np.sqrt(np.asarray(post["err_se_J"]) ** 2 + (err_ref.std(axis=0, ddof=1) / np.sqrt(draws)) ** 2)
    assert np.all(np.abs(np.asarray(post["err_J"]) - err_ref.mean(axis=0)) <= Z * err_se + 1e-12)


def _refine_population_and_se(p, post, j: int, draws: int):
    """``refine_population(E[pi])`` and its delta-method standard error from ``Cov(pi)``."""
    E_pi = post["E_pi_JxK"][j]
    value = float(cf.refine_population(p, E_pi))
    grad_K = np.asarray(2 * p.B_KxD @ p.Sigma_DxD @ (E_pi @ p.B_KxD - p.beta_star))
    cov = np.asarray(post["cov_pi_JxKxK"][j])
    return value, float(np.sqrt(grad_K @ cov @ grad_K / draws)), float(np.trace(cov))


def test_refine_population_matches_refine_then_fit():
    """Least squares on refined labels at large n: E R(b) = R(beta_ref) + E||b - beta_ref||^2.

    The variance term is, to leading order in d/n, ``tr Cov(pi) (d + 2) / (n - d - 1)`` (label noise
    ``(w - E w)^T B x`` has fourth moment ``E[(x^T V x)(x^T x)] = (d + 2) tr V`` for Sigma = I); its
    relative error is O(d/n) = 2%, so half of it is a safe bound on the approximation.
    """
    p = make_problem(ConceptModel.paper(), Biased(delta=1.0))
    draws, n, d, n_icl = 40000, 1000, 20, 8
    post = simulate_posterior(p, 16, draws, key=jax.random.key(21))
    pop, pop_se, tr_cov = _refine_population_and_se(p, post, n_icl, draws)
    out = simulate_fits(p, FitSettings(ns=(n,), trials=200, lams=(0.0,), steps=(0,), n_icl=n_icl), key=jax.random.key(4))
    mean, se = mean_and_se(out["refined/ridge"][:, 0, 0])
    variance = tr_cov * (d + 2) / (n - d - 1)
    assert abs(mean - (pop + variance)) <= Z * np.hypot(se, pop_se) + 0.5 * variance, (mean, pop, variance, se)


def test_default_setting_headline_numbers():
    """d=20, K=5, uniform alpha, k*=0, sigma=0.5, biased delta=1 (docs/theory.md §5).

    eps_P^2 = 0.8^2 + 4 * 0.2^2 = 0.8, eps_W^2 = delta^2 = 1, bound = 0.8 * 1 / 1.8 = 4/9 exactly.
    Refinement's population risk is stated as "about 0.037" (n_icl = 8) and "about 0.002" (16): two
    significant figures, so we accept +-5% of the stated value, plus 4 Monte Carlo standard errors.
    """
    p = make_problem(ConceptModel.paper(), Biased(delta=1.0))
    assert float(cf.eps_P2(p)) == pytest.approx(0.8, abs=1e-12)
    assert float(cf.eps_W2(p)) == pytest.approx(1.0, abs=1e-12)
    assert float(cf.segment_bound(p)) == pytest.approx(4 / 9, abs=1e-12)
    draws = 40000
    post = simulate_posterior(p, 16, draws, key=jax.random.key(8))
    for n_icl, stated in [(8, 0.037), (16, 0.002)]:
        value, se, _ = _refine_population_and_se(p, post, n_icl, draws)
        assert abs(value - stated) <= 0.05 * stated + Z * se, (n_icl, value, se)
    assert float(cf.refine_population(p, post["E_pi_JxK"][0])) == pytest.approx(0.8, abs=1e-12)
