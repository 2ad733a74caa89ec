"""Objectives and posterior readouts against hand computations and Monte Carlo frequencies."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.core import (
    READOUTS,
    PosteriorMAP,
    PosteriorMean,
    PosteriorSample,
    concept_log_posterior,
    cross_entropy_to_probs,
    kl_to_probs,
    squared_error_to_mean,
)


def test_squared_error_by_hand_and_masked():
    pred = jnp.asarray([1.0, 2.0, 4.0])
    mean = jnp.asarray([0.0, 2.0, 1.0])
    assert float(squared_error_to_mean(pred, mean)) == pytest.approx((1 + 0 + 9) / 3, abs=1e-15)
    mask = jnp.asarray([1, 0, 1])
    assert float(squared_error_to_mean(pred, mean, mask)) == pytest.approx((1 + 9) / 2, abs=1e-15)
    assert float(squared_error_to_mean(pred, mean, jnp.zeros(3))) == 0.0  # empty mask: no NaN


def test_cross_entropy_and_kl_by_hand_including_zero_probs():
    logits = jnp.asarray([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    probs = jnp.asarray([[0.2, 0.0, 0.8], [1.0, 0.0, 0.0]])
    logq = np.log(np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(-1, keepdims=True))
    ce_rows = [-(0.2 * logq[0, 0] + 0.8 * logq[0, 2]), -logq[1, 0]]
    ent_rows = [-(0.2 * math.log(0.2) + 0.8 * math.log(0.8)), 0.0]
    assert float(cross_entropy_to_probs(logits, probs)) == pytest.approx(np.mean(ce_rows), abs=1e-14)
    kl = kl_to_probs(logits, probs)
    assert float(kl) == pytest.approx(np.mean(np.subtract(ce_rows, ent_rows)), abs=1e-14)
    mask = jnp.asarray([0.0, 1.0])
    assert float(cross_entropy_to_probs(logits, probs, mask)) == pytest.approx(ce_rows[1], abs=1e-14)
    # Zero at the optimum (log 0 handled), finite gradients despite p_c = 0.
    assert float(kl_to_probs(jnp.log(jnp.asarray([[0.2, 1e-300, 0.8]])), probs[:1])) == pytest.approx(0.0, abs=1e-12)
    g = jax.grad(lambda z: kl_to_probs(z, probs))(logits)
    assert bool(jnp.all(jnp.isfinite(g)))
    # Gradient of the cross-entropy is (softmax(z) - p) / N.
    g_ce = jax.grad(lambda z: cross_entropy_to_probs(z, probs))(logits)
    np.testing.assert_allclose(np.asarray(g_ce), (np.exp(logq) - np.asarray(probs)) / 2, atol=1e-14)


@pytest.mark.parametrize(
    "fn,a,b",
    [
        (squared_error_to_mean, (3,), (4,)),
        (cross_entropy_to_probs, (2, 3), (2, 4)),
        (kl_to_probs, (2, 3), (3, 3)),
    ],
)
def test_shape_mismatch_names_both_shapes(fn, a, b):
    with pytest.raises(ValueError, match=rf"{a}.*{b}".replace("(", r"\(").replace(")", r"\)")):
        fn(jnp.zeros(a), jnp.zeros(b))


def test_mask_shape_mismatch_raises():
    with pytest.raises(ValueError, match="mask"):
        squared_error_to_mean(jnp.zeros(3), jnp.zeros(3), jnp.ones(4))


def test_concept_log_posterior_is_normalised_bayes_rule():
    log_prior = jnp.log(jnp.asarray([0.5, 0.3, 0.2]))
    loglik = jnp.asarray([[-1.0, -2.0, -0.5], [-1000.0, 0.0, -2000.0]])
    log_pi = concept_log_posterior(log_prior, loglik)
    np.testing.assert_allclose(np.asarray(jnp.exp(log_pi).sum(-1)), 1.0, atol=1e-14)
    unnorm = np.asarray([0.5, 0.3, 0.2]) * np.exp(np.asarray(loglik[0]))
    np.testing.assert_allclose(np.exp(np.asarray(log_pi[0])), unnorm / unnorm.sum(), rtol=1e-13)
    np.testing.assert_allclose(np.exp(np.asarray(log_pi[1])), [0.0, 1.0, 0.0], atol=1e-300)  # stable
    with pytest.raises(ValueError, match="concepts"):
        concept_log_posterior(log_prior, jnp.zeros((2, 4)))


def test_readouts():
    assert set(READOUTS) == {"mean", "map", "sample"}
    pi = jnp.asarray([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    log_pi = jnp.log(pi)
    key = jax.random.key(0)
    w_mean = PosteriorMean().weights(log_pi, key=key)
    np.testing.assert_allclose(np.asarray(w_mean), np.asarray(pi), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(w_mean.sum(-1)), 1.0, atol=1e-14)
    np.testing.assert_array_equal(np.asarray(PosteriorMAP().weights(log_pi, key=key)), [[0, 1, 0], [1, 0, 0]])
    # Sample frequencies match pi: each count is Binomial(M, pi_k).
    M = 40000
    w = PosteriorSample().weights(jnp.broadcast_to(log_pi[0], (M, 3)), key=key)
    assert bool(jnp.all(w.sum(-1) == 1))
    freq = np.asarray(w.mean(0))
    se = np.sqrt(np.asarray(pi[0]) * (1 - np.asarray(pi[0])) / M)
    assert np.all(np.abs(freq - np.asarray(pi[0])) <= 4 * se), (freq, se)


def test_concept_log_posterior_of_rows_that_are_all_very_negative():
    """Bayes' rule is invariant to a shift shared by all concepts: a row whose log-likelihoods are all
    near -2000 (exp underflows to 0 in float64) has the same posterior as the row shifted to 0."""
    log_prior = jnp.log(jnp.asarray([0.5, 0.3, 0.2]))
    base = jnp.asarray([[-1.0, -2.0, -0.5], [0.0, -3.0, -1.0]])
    shifted = concept_log_posterior(log_prior, base - 2000.0)
    assert bool(jnp.all(jnp.isfinite(shifted)))
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(concept_log_posterior(log_prior, base)), atol=1e-12)
    unnorm = np.asarray([0.5, 0.3, 0.2]) * np.exp([-1.0, -2.0, -0.5])
    np.testing.assert_allclose(np.exp(np.asarray(shifted[0])), unnorm / unnorm.sum(), rtol=1e-12)


def test_map_readout_ties_are_split_equally():
    """Exact ties share the weight (the expectation of a uniformly random tie-break): a uniform row
    gives 1/K each, a two-way tie 1/2 each, whichever concepts tie."""
    log_pi = jnp.log(jnp.asarray([[0.25, 0.25, 0.25, 0.25], [0.1, 0.45, 0.0, 0.45], [0.4, 0.4, 0.1, 0.1]]))
    w = np.asarray(PosteriorMAP().weights(log_pi, key=jax.random.key(0)))
    np.testing.assert_array_equal(w, [[0.25, 0.25, 0.25, 0.25], [0, 0.5, 0, 0.5], [0.5, 0.5, 0, 0]])
