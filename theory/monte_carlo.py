"""Monte Carlo engine: jitted, vmapped over trials (and, by the caller, over a parameter grid).

Two stages, each one jit boundary:

* :func:`simulate_fits`: per trial, draw ``X`` once and label it three ways (gold, weak, refined,
  from :mod:`w2s_jax.core.label_sources`, with independent keys), then fit each labelling with the
  ridge path and the gradient-descent path of :mod:`theory.estimators`. Paired by trial, so PGR's
  ratio of gaps is estimated with its correlation.
* :func:`simulate_posterior`: the refined posterior ``pi(D)`` for ``n_icl = 0..n_max`` nested
  demonstration sets, giving ``E[pi]`` and ``1 - E[pi_star]`` with standard errors.

Randomness: one key per call, split by purpose (``data_key, gold_key, weak_key, refine_key``) and
folded with the trial index, so a trial's draw does not depend on how many trials run.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from theory.estimators import gd_from_spectrum, ridge_from_spectrum, rotated_target, sample_features, spectrum
from theory.model import Problem
from theory.validation import integer, real
from w2s_jax.core import READOUTS, GoldLabels, RefinedLabels, WeakLabels, excess_risk

__all__ = ["FitSettings", "simulate_fits", "simulate_posterior", "label_sources", "in_chunks", "TRIAL_CHUNK"]

DEFAULT_LAMS = tuple(float(x) for x in np.logspace(-3, 3, 25))  # numpy: importing starts no JAX backend
DEFAULT_STEPS = (0, 1, 2, 3, 5, 8, 13, 20, 30, 50, 80, 130, 200, 320, 500, 1000, 3000, 10000)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitSettings:
    """Static settings of one finite-sample fine-tuning simulation (hashable: a jit static arg)."""

    ns: tuple[int, ...] = (100,)  # training-set sizes (nested prefixes of one sample per trial)
    trials: int = 1000  # Monte Carlo trials
    lams: tuple[float, ...] = DEFAULT_LAMS  # ridge strengths towards beta_P
    steps: tuple[int, ...] = DEFAULT_STEPS  # gradient-descent step counts
    lr: float = 0.2  # gradient-descent step size on (1/2n)||y - Xb||^2
    n_icl: int = 8  # demonstrations per refined label
    readout: str = "mean"  # posterior readout: mean | map | sample

    def __post_init__(self):
        if not self.ns or min(integer(f"ns[{i}]", n) for i, n in enumerate(self.ns)) < 1:
            raise ValueError(f"ns must be non-empty sizes >= 1, got ns={self.ns}")
        if integer("trials", self.trials) < 1:
            raise ValueError(f"trials must be >= 1, got trials={self.trials}")
        if integer("n_icl", self.n_icl) < 0:
            raise ValueError(f"n_icl must be >= 0, got n_icl={self.n_icl}")
        # real() refuses NaN and inf, which every comparison below would let through.
        if not self.lams or min(real(f"lams[{i}]", x) for i, x in enumerate(self.lams)) < 0:
            raise ValueError(f"lams must be a non-empty tuple of values >= 0, got lams={self.lams}")
        if not self.steps or min(integer(f"steps[{i}]", t) for i, t in enumerate(self.steps)) < 0:
            raise ValueError(f"steps must be a non-empty tuple of values >= 0, got steps={self.steps}")
        # lr < 1 keeps population GD (Sigma = I) monotone, on the segment of docs/theory.md. A
        # sample's A = X^T X / n has a larger top eigenvalue, about (1 + sqrt(d/n))^2, so with
        # n << d even lr < 1 can exceed 2 / lambda_max(A); the risks then grow with t, as they should.
        if not 0 < real("lr", self.lr) < 1:
            raise ValueError(f"lr must be in (0, 1), got lr={self.lr}")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; choose one of {sorted(READOUTS)}")


def label_sources(p: Problem, n_icl: int, readout: str = "mean") -> dict:
    """The three label sources of one problem: ``{"gold", "weak", "refined"}``."""
    weak = WeakLabels(p.beta_weak, p.sigma_weak)
    return {
        "gold": GoldLabels(p.beta_star, p.sigma),
        "weak": weak,
        "refined": RefinedLabels(weak, p.B_KxD, jnp.log(p.alpha_K), p.sigma, p.Sigma_DxD, n_icl, READOUTS[readout]),
    }


def _one_trial(p: Problem, s: FitSettings, trial_key: jax.Array) -> dict:
    data_key, gold_key, weak_key, refine_key = jax.random.split(trial_key, 4)
    keys = {"gold": gold_key, "weak": weak_key, "refined": refine_key}
    n_max = max(s.ns)
    X_NxD = sample_features(p.Sigma_DxD, n_max, key=data_key)
    # Row masks for every sample size (nested prefixes of one sample), fitted by vmap: one batched
    # eigendecomposition for all sizes (lax.map ran 1.7x slower; see docs/benchmarks.md).
    w_SxN = (jnp.arange(n_max)[None, :] < jnp.asarray(s.ns)[:, None]).astype(X_NxD.dtype)
    y = {name: source(X_NxD, key=keys[name]) for name, source in label_sources(p, s.n_icl, s.readout).items()}

    def fit(w_N):
        a_D, V_DxD = spectrum(X_NxD, w_N)  # one eigendecomposition for all labels and both paths
        risks = {}
        for name, y_N in y.items():
            c_D = rotated_target(X_NxD, y_N, V_DxD, w_N)
            b_LxD = ridge_from_spectrum(a_D, V_DxD, c_D, p.beta_P, jnp.asarray(s.lams))
            b_TxD = gd_from_spectrum(a_D, V_DxD, c_D, p.beta_P, jnp.asarray(s.steps), s.lr)
            risks[f"{name}/ridge"] = excess_risk(b_LxD, p.beta_star, p.Sigma_DxD)
            risks[f"{name}/gd"] = excess_risk(b_TxD, p.beta_star, p.Sigma_DxD)
        return risks

    return jax.vmap(fit)(w_SxN)


@functools.partial(jax.jit, static_argnames=("settings",))
def simulate_fits(problem: Problem, settings: FitSettings, *, key: jax.Array, first_trial=0) -> dict:
    """Excess risk of ridge and GD fine-tuning on gold, weak and refined labels, per trial.

    Trial ``i`` (counting from ``first_trial``, a traced integer) draws from ``fold_in(key, i)``,
    so :func:`in_chunks` can split a run into equal chunks that compile once and give exactly the
    same numbers as a single call.

    Returns:
      ``{"<source>/ridge": risk_TxNxL, "<source>/gd": risk_TxNxS}`` for source in gold, weak,
      refined (T trials, N sample sizes ``settings.ns``, L ridge strengths, S step counts).
    """
    trial_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(first_trial + jnp.arange(settings.trials))
    return jax.vmap(lambda k: _one_trial(problem, settings, k))(trial_keys)


TRIAL_CHUNK = 2000  # trials per compiled call: bounds memory (X is trials x n x d) and shows progress


def in_chunks(run_chunk, trials: int, *, chunk: int = TRIAL_CHUNK, axis: int = 0, desc: str = "trials") -> dict:
    """Run ``run_chunk(first_trial, size)`` over equal chunks of ``trials`` and join them on ``axis``.

    Every chunk has the same size (the last one is padded, then cut), so they share one
    compilation; with :func:`simulate_fits` the result equals a single call bit for bit. A progress
    bar appears when there is more than one chunk (and the output is a terminal).
    """
    size = min(chunk, trials)
    starts = range(0, trials, size)
    parts = [
        {k: np.asarray(v) for k, v in run_chunk(first, size).items()}
        for first in tqdm(starts, desc=desc, unit="chunk", leave=False, disable=True if len(starts) == 1 else None)
    ]
    joined = {k: np.concatenate([p[k] for p in parts], axis=axis) for k in parts[0]}
    return {k: np.take(v, np.arange(trials), axis=axis) for k, v in joined.items()}


@functools.partial(jax.jit, static_argnames=("n_max", "draws"))
def simulate_posterior(problem: Problem, n_max: int, draws: int, *, key: jax.Array) -> dict:
    """Monte Carlo of the refinement posterior for ``n_icl = 0..n_max`` (nested demonstration sets).

    Arguments:
      problem: the problem.
      n_max: the largest number of demonstrations, an integer >= 0 (static).
      draws: posterior draws per ``n_icl``, an integer >= 2 (static; two for a standard error).
      key: PRNG key.

    Returns:
      ``E_pi_JxK`` (mean posterior; also the mean weight of the sample readout), ``E_map_JxK``
      (mean weight of the MAP readout), ``err_J`` = ``1 - E[pi_star]`` and ``err_se_J`` its standard
      error, and ``cov_pi_JxKxK`` (covariance of ``pi``, for the delta-method error of the risk),
      with ``J = n_max + 1``. ``1 - pi_star`` is summed from the other concepts' posteriors, never
      subtracted, so values down to ~1e-300 are exact.
    """
    # Static arguments: checked at trace time, so a bad value never reaches a compiled program.
    if integer("n_max", n_max) < 0:
        raise ValueError(f"n_max must be >= 0, got n_max={n_max}")
    if integer("draws", draws) < 2:
        raise ValueError(f"draws must be >= 2 (a mean and its standard error), got draws={draws}")
    src = label_sources(problem, n_max)["refined"]
    log_pi_MxJxK = src.log_posterior_path(draws, key=key)
    pi_MxJxK = jnp.exp(log_pi_MxJxK)
    others = jnp.arange(pi_MxJxK.shape[-1]) != problem.k_star
    err_MxJ = jnp.sum(jnp.where(others, pi_MxJxK, 0.0), axis=-1)
    E_pi_JxK = jnp.mean(pi_MxJxK, axis=0)
    # MAP readout's mean weight; the sample readout has E[w] = E[pi], the same as the mean readout.
    E_map_JxK = jnp.mean(READOUTS["map"].weights(log_pi_MxJxK, key=key), axis=0)
    centred = pi_MxJxK - E_pi_JxK
    cov_JxKxK = jnp.einsum("mjk,mjl->jkl", centred, centred) / (draws - 1)
    return {
        "E_pi_JxK": E_pi_JxK,
        "E_map_JxK": E_map_JxK,
        "err_J": jnp.mean(err_MxJ, axis=0),
        "err_se_J": jnp.std(err_MxJ, axis=0, ddof=1) / jnp.sqrt(draws),
        "cov_pi_JxKxK": cov_JxKxK,
    }
