"""The exact Bayes-optimal in-context predictor of the concept world.

A document's outputs follow ``p(y | x, k) = (1 - eps) [y = f_k(x)] + eps / |Y|``. Given
demonstrations ``D = ((x_1, y_1), ..., (x_n, y_n))`` the posterior over concepts is

    pi_k(D) = alpha_k prod_i p(y_i | x_i, k) / sum_j alpha_j prod_i p(y_i | x_i, j),

and the predictive of a query x is ``p(y | x, D) = sum_k pi_k(D) p(y | x, k)``. This is what a
model that has learnt the pre-training distribution perfectly predicts: the theory's prediction
of what in-context refinement can reach (``docs/theory.md``, the posterior pi(D)).

The per-demonstration Chernoff exponent of the contest between the target concept and a rival j
(:func:`chernoff_rate`) is the decay rate of the posterior's error, the analogue of rho*.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from w2s_jax.concept_world.world import World


def log_likelihood_K(world: World, xs: Sequence[int], ys: Sequence[int]) -> np.ndarray:
    """``log prod_i p(y_i | x_i, k)`` for every concept k (float64, shape K)."""
    eps, size = world.noise, world.config.num_outputs
    xs, ys = np.asarray(xs, np.int64), np.asarray(ys, np.int64)
    match_KxN = world.tables_KxX[:, xs] == ys[None, :]
    hit, miss = np.log(1 - eps + eps / size), np.log(eps / size) if eps > 0 else -np.inf
    with np.errstate(invalid="ignore"):
        return np.where(match_KxN, hit, miss).sum(axis=1) if len(xs) else np.zeros(world.num_concepts)


def posterior_K(world: World, xs: Sequence[int], ys: Sequence[int]) -> np.ndarray:
    """``pi(D)``: the posterior over concepts given demonstrations (shape K, sums to 1)."""
    log_post = np.log(world.alpha_K) + log_likelihood_K(world, xs, ys)
    if not np.isfinite(log_post).any():  # eps = 0 and no concept explains D: the prior
        log_post = np.log(world.alpha_K)
    log_post = log_post - log_post[np.isfinite(log_post)].max()
    post = np.exp(log_post)
    return post / post.sum()


def predictive_Y(world: World, xs: Sequence[int], ys: Sequence[int], query: int) -> np.ndarray:
    """``p(y | query, D)`` over the outputs (shape |Y|)."""
    eps, size = world.noise, world.config.num_outputs
    post = posterior_K(world, xs, ys)
    out = np.full(size, eps / size) * post.sum()
    np.add.at(out, world.tables_KxX[:, query], (1 - eps) * post)
    return out


def bayes_answer(world: World, xs: Sequence[int], ys: Sequence[int], query: int) -> int:
    """The Bayes-optimal answer (the predictive's mode; ties to the smallest output)."""
    return int(np.argmax(predictive_Y(world, xs, ys, query)))


def chernoff_rate(world: World, label_probs_NxY: np.ndarray, inputs: Sequence[int], target: int,
                  grid: int = 201) -> float:
    """The decay rate of the Bayes posterior's error: ``min_j max_s -log E[(p_j / p_target)^s]``.

    Demonstrations are ``(x, y)`` with x uniform over ``inputs`` and y drawn from the labeller's
    law ``label_probs_NxY[i]`` for input ``inputs[i]``. ``log pi_j / pi_target`` is a sum of n
    i.i.d. terms, so by Chernoff's bound the posterior prefers rival j with probability about
    ``exp(-n rho_j)``; the rate of the whole error is the smallest ``rho_j`` (the theory's rho*).
    0 means some rival is never told apart or is favoured in the limit (the target is not
    identifiable from this labeller), as for a misaligned labeller with gamma > 1/2.
    """
    eps, size = world.noise, world.config.num_outputs
    inputs = np.asarray(inputs, np.int64)
    match_KxNxY = world.tables_KxX[:, inputs, None] == np.arange(size)[None, None, :]
    log_p_KxNxY = np.where(match_KxNxY, np.log(1 - eps + eps / size), np.log(max(eps, 1e-300) / size))
    q_NxY = np.asarray(label_probs_NxY, np.float64)
    s_S = np.linspace(0.0, 1.0, grid)
    rates = []
    for j in range(world.num_concepts):
        if j == target:
            continue
        z_NxY = log_p_KxNxY[j] - log_p_KxNxY[target]
        mgf_S = (q_NxY[None] * np.exp(s_S[:, None, None] * z_NxY[None])).sum(-1).mean(-1)
        rates.append(float(max(-np.log(mgf_S.min()), 0.0)))
    return min(rates)


def label_law(world: World, labels: Sequence[int] | None, inputs: Sequence[int], *, target: int,
              eta: float = 0.0) -> np.ndarray:
    """A labeller's law per input (N x |Y|): one-hot on ``labels`` (a deterministic labeller), or
    for ``labels=None`` the noisy labeller's: the target's label w.p. 1 - eta, else uniform over
    the other outputs."""
    size = world.config.num_outputs
    inputs = np.asarray(inputs, np.int64)
    if labels is not None:
        return np.eye(size)[np.asarray(labels, np.int64)]
    law = np.full((len(inputs), size), eta / (size - 1))
    law[np.arange(len(inputs)), world.tables_KxX[target, inputs]] = 1 - eta
    return law
