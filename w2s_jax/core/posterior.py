"""Posterior over latent concepts and the readouts that turn it into a label.

A strong model holding K latent concepts with prior ``alpha`` updates, after demonstrations D,
to ``pi_k(D) ∝ alpha_k p_k(D)`` (eq. T.6). A *readout* turns that posterior into the weights
``w_k`` of the label it emits, ``y_refined = sum_k w_k f_k(x)``:

* :class:`PosteriorMean`: ``w = pi`` (the posterior-predictive mean; Bayes-optimal under squared
  error and log-loss);
* :class:`PosteriorMAP`: ``w = onehot(argmax pi)`` (exact ties share the weight equally, the
  expectation of breaking them uniformly at random, so a uniform prior with no demonstrations
  does not silently pick concept 0);
* :class:`PosteriorSample`: ``w = onehot(k)``, ``k ~ pi`` (Thompson-style relabelling).

Readouts are small strategy objects, so a new one is a new class, not a flag.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import jax
import jax.numpy as jnp

__all__ = [
    "concept_log_posterior",
    "Readout",
    "PosteriorMean",
    "PosteriorMAP",
    "PosteriorSample",
    "READOUTS",
]


def concept_log_posterior(log_prior_K: jax.Array, loglik_NxK: jax.Array) -> jax.Array:
    """Log posterior over concepts, ``log pi_k = log alpha_k + log p_k(D) - log Z`` (eq. T.6).

    Args:
      log_prior_K: log prior over the K concepts (``-inf`` allowed for excluded concepts).
      loglik_NxK: log-likelihood of each example's demonstrations under each concept; leading axes
        arbitrary. Additive constants shared by all concepts cancel and may be dropped.

    Returns:
      ``log_pi_NxK``, normalised along the last axis (computed by log-softmax, so stable when the
      likelihoods are far apart).
    """
    if loglik_NxK.shape[-1] != log_prior_K.shape[-1]:
        raise ValueError(
            f"loglik_NxK has {loglik_NxK.shape[-1]} concepts on its last axis but log_prior_K has "
            f"{log_prior_K.shape[-1]}"
        )
    return jax.nn.log_softmax(log_prior_K + loglik_NxK, axis=-1)


class Readout(Protocol):
    """Maps a log posterior ``log_pi_NxK`` to label weights ``w_NxK`` (rows on the simplex)."""

    name: str

    def weights(self, log_pi_NxK: jax.Array, *, key: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class PosteriorMean:
    """``w = pi``: the posterior-predictive mean label."""

    name: str = "mean"

    def weights(self, log_pi_NxK: jax.Array, *, key: jax.Array) -> jax.Array:
        del key
        return jnp.exp(log_pi_NxK)


@dataclasses.dataclass(frozen=True)
class PosteriorMAP:
    """``w = onehot(argmax_k pi_k)``: the label of the most probable concept (ties split equally)."""

    name: str = "map"

    def weights(self, log_pi_NxK: jax.Array, *, key: jax.Array) -> jax.Array:
        del key
        is_max = (log_pi_NxK == jnp.max(log_pi_NxK, axis=-1, keepdims=True)).astype(log_pi_NxK.dtype)
        return is_max / jnp.sum(is_max, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class PosteriorSample:
    """``w = onehot(k)`` with ``k ~ pi``: one concept sampled per example."""

    name: str = "sample"

    def weights(self, log_pi_NxK: jax.Array, *, key: jax.Array) -> jax.Array:
        K = log_pi_NxK.shape[-1]
        k_N = jax.random.categorical(key, log_pi_NxK, axis=-1)
        return jax.nn.one_hot(k_N, K, dtype=log_pi_NxK.dtype)


READOUTS: dict[str, Readout] = {r.name: r for r in (PosteriorMean(), PosteriorMAP(), PosteriorSample())}
