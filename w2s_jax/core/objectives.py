"""Refinement objectives: fit a student to a teacher's posterior predictive.

Refinement replaces each weak label by the strong model's posterior predictive given weak
demonstrations, then fits the student to that predictive. The fit is a proper scoring rule of the
predictive, so its minimiser in expectation is the predictive itself:

* Gaussian predictive ``N(mu, s^2)``: the expected negative log-likelihood of a student mean ``f``
  is ``(f - mu)^2 / (2 s^2) + const``, so the objective is the squared error to the posterior mean
  (eq. T.9 in ``docs/theory.md``). The theory half uses this form.
* Categorical predictive ``p``: the expected log-loss of student logits ``z`` is the cross-entropy
  ``H(p, softmax(z)) = KL(p || softmax(z)) + H(p)``. The LLM half uses this form.

All functions are pure functions of arrays, reduce by a (masked) mean over the leading axes, and
check shapes eagerly so a mismatch fails with the two shapes named.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "squared_error_to_mean",
    "cross_entropy_to_probs",
    "kl_to_probs",
]


def _check_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; they must match")


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    _check_same_shape("mask", mask, "per-example loss", values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def squared_error_to_mean(pred_N: jax.Array, posterior_mean_N: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """Mean squared error of student predictions to the teacher's posterior mean.

    Implements ``L(f) = mean_i (f(x_i) - E_pi[y | x_i, D_i])^2`` (eq. T.9): the Gaussian
    refinement objective, up to the factor ``1 / (2 s^2)`` and an additive constant.

    Args:
      pred_N: student predictions, any shape.
      posterior_mean_N: the teacher's posterior-mean prediction, same shape.
      mask_N: optional 0/1 weights, same shape.

    Returns:
      A scalar.
    """
    _check_same_shape("pred_N", pred_N, "posterior_mean_N", posterior_mean_N)
    return _masked_mean(jnp.square(pred_N - posterior_mean_N), mask_N)


def cross_entropy_to_probs(logits_NxC: jax.Array, probs_NxC: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """Cross-entropy ``H(p, softmax(z)) = -sum_c p_c log softmax(z)_c``, averaged over examples.

    The categorical refinement objective (eq. T.10). With one-hot ``p`` it is the usual
    cross-entropy to hard labels.

    Args:
      logits_NxC: student logits over C classes (leading axes arbitrary).
      probs_NxC: teacher probabilities, same shape, rows on the simplex.
      mask_N: optional weights over the leading axes.
    """
    _check_same_shape("logits_NxC", logits_NxC, "probs_NxC", probs_NxC)
    log_q = jax.nn.log_softmax(logits_NxC, axis=-1)
    per_example = -jnp.sum(jnp.where(probs_NxC > 0, probs_NxC * log_q, 0.0), axis=-1)
    return _masked_mean(per_example, mask_N)


def kl_to_probs(logits_NxC: jax.Array, probs_NxC: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """``KL(p || softmax(z))``, averaged over examples: cross-entropy minus the teacher's entropy.

    Same gradient as :func:`cross_entropy_to_probs`, but zero at the optimum, so it reads as a
    distance. Terms with ``p_c = 0`` contribute 0 (the convention ``0 log 0 = 0``).
    """
    _check_same_shape("logits_NxC", logits_NxC, "probs_NxC", probs_NxC)
    log_q = jax.nn.log_softmax(logits_NxC, axis=-1)
    safe_p = jnp.where(probs_NxC > 0, probs_NxC, 1.0)
    per_example = jnp.sum(jnp.where(probs_NxC > 0, probs_NxC * (jnp.log(safe_p) - log_q), 0.0), axis=-1)
    return _masked_mean(per_example, mask_N)
