"""Quantities checked against values worked by hand or computed by a different code path.

Each test here exists because a realistic one-line bug passed every other test (the mutation run
of ``tools/mutation.py``, ``docs/theory.md`` §7): squares dropped from the noisy supervisor's noise,
the target concept taken as concept 0, gold and weak labels sharing a PRNG key, a standard error
with ``ddof=0``, MAP ties broken towards concept 0.
"""

import math

import jax
import numpy as np
import pytest

from theory import closed_form as cf
from theory.model import Biased, ConceptModel, Misaligned, Noisy, make_problem
from theory.monte_carlo import FitSettings, label_sources, simulate_fits, simulate_posterior

Z = 4.0


@pytest.mark.parametrize("sigma,eta,expected", [(0.3, 0.4, 0.5), (0.5, 1.0, math.sqrt(1.25)), (1.0, 0.0, 1.0),
                                                (0.6, 0.8, 1.0)])
def test_noisy_supervisor_noise_adds_in_quadrature(sigma, eta, expected):
    """sigma_w^2 = sigma^2 + eta^2 (eq. T.3): 0.3-0.4-0.5 and 0.6-0.8-1.0 are Pythagorean triples."""
    p = make_problem(ConceptModel(d=6, K=3, sigma=sigma), Noisy(eta=eta))
    assert float(p.sigma_weak) == pytest.approx(expected, abs=1e-15)
    np.testing.assert_array_equal(np.asarray(p.beta_weak), np.eye(3, 6)[0])


def test_noisy_labels_have_the_stated_residual_variance():
    """The weak labels' residual y' - beta_star^T x, sampled, has variance sigma^2 + eta^2 = 0.25."""
    p = make_problem(ConceptModel(d=6, K=3, sigma=0.3), Noisy(eta=0.4))
    N = 200_000
    X = jax.random.normal(jax.random.key(0), (N, 6), dtype=p.beta_P.dtype)
    y = label_sources(p, 0)["weak"](X, key=jax.random.key(1))
    r = np.asarray(y) - np.asarray(X)[:, 0]
    assert abs(r.var() - 0.25) <= Z * 0.25 * math.sqrt(2 / N), r.var()


@pytest.mark.parametrize("k_star", [0, 2, 4])
def test_decay_exponent_does_not_depend_on_which_concept_is_the_target(k_star):
    """Biased delta=1 in the default setting: rho* = (1/2) log(7/5) by hand (docs/theory.md §5), for
    any target concept (relabelling the concepts changes nothing when alpha is uniform)."""
    p = make_problem(ConceptModel(d=20, K=5, sigma=0.5, k_star=k_star), Biased(delta=1.0))
    assert float(cf.decay_exponent(p)) == pytest.approx(0.5 * math.log(7 / 5), abs=1e-12)
    assert bool(cf.identifiable(p))


def test_decay_exponent_of_a_misaligned_target_other_than_concept_0():
    """Misaligned towards j with gamma < 1/2: the slowest competitor is j, and for k* = 2, j = 0 the
    exponent equals that of k* = 0, j = 2 (a relabelling of the concepts)."""
    a = make_problem(ConceptModel(d=8, K=4, sigma=0.5, k_star=0), Misaligned(gamma=0.3, delta=0.5, j=2))
    b = make_problem(ConceptModel(d=8, K=4, sigma=0.5, k_star=2), Misaligned(gamma=0.3, delta=0.5, j=0))
    assert float(cf.decay_exponent(b)) == pytest.approx(float(cf.decay_exponent(a)), abs=1e-14)
    assert float(cf.decay_exponent(b)) > 0


def test_gold_weak_and_refined_labels_use_independent_noise():
    """Biased(delta=0) makes weak labels the same law as gold ones. Drawn with one key they would be
    identical; with independent keys the per-trial least-squares risks correlate only through the
    shared X, by O(1/n) (the conditional mean sigma^2 tr((X^T X)^{-1}) varies by O(1/sqrt(n d)) relative
    to a risk that varies by O(1/sqrt(d))): the sample correlation is within 4/sqrt(T) + 2/n of 0."""
    p = make_problem(ConceptModel(d=6, K=3, sigma=0.5), Biased(delta=0.0))
    T, n = 2000, 200
    s = FitSettings(ns=(n,), trials=T, lams=(0.0,), steps=(0,), n_icl=2)
    out = simulate_fits(p, s, key=jax.random.key(21))
    gold, weak, refined = (np.asarray(out[f"{k}/ridge"])[:, 0, 0] for k in ("gold", "weak", "refined"))
    assert not np.array_equal(gold, weak)
    for a, b in ((gold, weak), (gold, refined), (weak, refined)):
        assert abs(np.corrcoef(a, b)[0, 1]) <= Z / math.sqrt(T) + 2 / n
    # The same law: mean OLS risks agree with sigma^2 d / (n - d - 1) = 0.25 * 6 / 193 each.
    for x in (gold, weak):
        assert abs(x.mean() - 0.25 * 6 / 193) <= Z * x.std(ddof=1) / math.sqrt(T)


def test_posterior_standard_error_uses_the_unbiased_variance():
    """Two draws: se = std(ddof=1) / sqrt(2) = |e1 - e2| / 2, computed here from the two posteriors."""
    p = make_problem(ConceptModel(d=6, K=3, sigma=0.5), Biased(delta=1.0))
    key = jax.random.key(4)
    post = simulate_posterior(p, 3, 2, key=key)
    pi_MxJxK = np.exp(np.asarray(label_sources(p, 3)["refined"].log_posterior_path(2, key=key)))
    err_MxJ = 1.0 - pi_MxJxK[..., 0]
    assert np.all(np.abs(err_MxJ[0, 1:] - err_MxJ[1, 1:]) > 1e-6)  # the two draws differ
    np.testing.assert_allclose(np.asarray(post["err_J"]), err_MxJ.mean(0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(post["err_se_J"]), np.abs(err_MxJ[0] - err_MxJ[1]) / 2, rtol=1e-10, atol=1e-300)
    d = pi_MxJxK[0] - pi_MxJxK[1]  # sample covariance of two draws: d d^T / 2
    np.testing.assert_allclose(np.asarray(post["cov_pi_JxKxK"]), np.einsum("jk,jl->jkl", d, d) / 2, rtol=1e-10, atol=1e-300)


def test_map_readout_splits_a_prior_tie_equally():
    """No demonstrations and a uniform prior: every concept ties, so E[w_MAP] = 1/K each (not e_0);
    a prior tie between two of three concepts gives (1/2, 1/2, 0)."""
    p = make_problem(ConceptModel(d=6, K=3, sigma=0.5), Biased(delta=1.0))
    post = simulate_posterior(p, 2, 4, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(post["E_map_JxK"])[0], [1 / 3] * 3, atol=1e-15)
    q = make_problem(ConceptModel(d=6, K=3, sigma=0.5, alpha=(0.4, 0.4, 0.2)), Biased(delta=1.0))
    post = simulate_posterior(q, 2, 4, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(post["E_map_JxK"])[0], [0.5, 0.5, 0.0], atol=1e-15)


def test_sampled_features_have_covariance_sigma():
    """x ~ N(0, Sigma) with Sigma = diag(scales^2): each sample variance within 4 se (sqrt(2/N) Sigma_ii) of
    its scale squared, and off-diagonal covariances within 4 se (scale_i scale_j / sqrt(N)) of 0."""
    from theory.estimators import sample_features

    scales = np.asarray([2.0, 0.5, 1.0, 3.0])
    N = 100_000
    X = np.asarray(sample_features(jax.numpy.asarray(np.diag(scales**2)), N, key=jax.random.key(9)))
    cov = X.T @ X / N
    np.testing.assert_array_less(np.abs(np.diag(cov) - scales**2), Z * scales**2 * math.sqrt(2 / N))
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_array_less(np.abs(cov[off]), (Z * np.outer(scales, scales) / math.sqrt(N))[off])


def test_ols_risk_does_not_depend_on_the_feature_scales():
    """Prop. 2.3 for any Sigma: E R(b_OLS) = sigma^2 d / (n - d - 1) in the Sigma-norm (d = 6, n = 20: 0.25 * 6 / 13)."""
    model = ConceptModel(d=6, K=3, sigma=0.5, feature_scales=(3.0, 0.5, 1.0, 2.0, 0.25, 1.0))
    p = make_problem(model, Biased(delta=0.0))
    T = 3000
    out = simulate_fits(p, FitSettings(ns=(20,), trials=T, lams=(0.0,), steps=(0,), n_icl=0), key=jax.random.key(10))
    for source in ("gold", "weak"):
        r = np.asarray(out[f"{source}/ridge"])[:, 0, 0]
        assert abs(r.mean() - 0.25 * 6 / 13) <= Z * r.std(ddof=1) / math.sqrt(T), (source, r.mean())
