"""Metrics: excess risk, accuracy, and performance gap recovered (PGR) with a confidence interval.

PGR (Burns et al., 2023) measures how much of the gap between the weak supervisor and the
strong ceiling a method recovers (eq. T.14)::

    PGR = (score(method) - score(weak)) / (score(ceiling) - score(weak)).

It is a ratio of two estimated means, so it gets a confidence interval from paired per-trial
scores, by the delta method (default) or a paired bootstrap, and is reported as NaN, with a
warning, when the denominator is not significantly positive: a ratio over a gap that may be zero
carries no information.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["excess_risk", "accuracy", "PGREstimate", "pgr", "mean_and_se"]


def excess_risk(b_D: jax.Array, beta_star_D: jax.Array, Sigma_DxD: jax.Array | None = None) -> jax.Array:
    """``R(b) = (b - beta_star)^T Sigma (b - beta_star)`` (eq. T.4), over any leading axes of ``b``.

    Args:
      b_D: predictor(s), shape ``(..., D)``.
      beta_star_D: the target concept, shape ``(D,)`` or broadcastable to ``b_D``.
      Sigma_DxD: feature covariance; identity when None.
    """
    if b_D.shape[-1] != beta_star_D.shape[-1]:
        raise ValueError(f"b_D has {b_D.shape[-1]} features but beta_star_D has {beta_star_D.shape[-1]}")
    e = b_D - beta_star_D
    if Sigma_DxD is None:
        return jnp.sum(jnp.square(e), axis=-1)
    return jnp.einsum("...d,de,...e->...", e, Sigma_DxD, e)


def accuracy(pred_N: jax.Array, labels_N: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """Fraction of (masked) positions where ``pred == labels``."""
    if pred_N.shape != labels_N.shape:
        raise ValueError(f"pred_N has shape {pred_N.shape} but labels_N has shape {labels_N.shape}")
    hits = (pred_N == labels_N).astype(jnp.float32)
    if mask_N is None:
        return jnp.mean(hits)
    mask = mask_N.astype(jnp.float32)
    return jnp.sum(hits * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def mean_and_se(values_T) -> tuple[float, float]:
    """Sample mean and its standard error ``std / sqrt(T)`` of per-trial values."""
    v = np.asarray(values_T, dtype=np.float64).reshape(-1)
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


@dataclasses.dataclass(frozen=True)
class PGREstimate:
    """A PGR estimate.

    Attributes:
      value: the ratio of mean gaps (NaN when ``reliable`` is False).
      lo, hi: the two-sided confidence interval at ``level``.
      se: standard error of ``value``.
      gap: the denominator ``mean(score(ceiling) - score(weak))`` and ``gap_se`` its standard error.
      reliable: whether the denominator is significantly positive at ``level``.
    """

    value: float
    lo: float
    hi: float
    se: float
    gap: float
    gap_se: float
    reliable: bool
    level: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def pgr(
    method_T,
    weak_T,
    ceiling_T,
    *,
    higher_is_better: bool = True,
    level: float = 0.95,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> PGREstimate:
    """Performance gap recovered with a confidence interval (eq. T.14).

    Args:
      method_T, weak_T, ceiling_T: per-trial scores (or risks), paired by trial; a scalar broadcasts
        (e.g. a weak supervisor whose risk is known exactly).
      higher_is_better: False for risks and losses (then ``score = -risk``).
      level: confidence level of the interval and of the denominator's significance test.
      n_bootstrap: 0 for the delta method; otherwise the number of paired bootstrap resamples
        (percentile interval, seeded by ``seed``).

    Returns:
      A :class:`PGREstimate`. When the gap is not significantly positive, ``value``/``lo``/``hi`` are
      NaN and a ``RuntimeWarning`` says why.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (method_T, weak_T, ceiling_T)))
    sign = 1.0 if higher_is_better else -1.0
    m, w, c = (sign * a.reshape(-1) for a in arrays)
    a_T, b_T = m - w, c - w  # numerator and denominator per trial
    T = a_T.size
    z = NormalDist().inv_cdf(0.5 + level / 2)
    a_bar, b_bar = float(a_T.mean()), float(b_T.mean())
    b_se = float(b_T.std(ddof=1) / math.sqrt(T)) if T > 1 else 0.0
    reliable = b_bar - z * b_se > 0.0 and b_bar > 0.0
    if not reliable:
        warnings.warn(
            f"PGR undefined: the weak-to-ceiling gap {b_bar:.4g} (se {b_se:.2g}) is not significantly "
            f"positive at level {level}; reporting NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        nan = float("nan")
        return PGREstimate(nan, nan, nan, nan, b_bar, b_se, False, level)
    ratio = a_bar / b_bar
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, T, size=(n_bootstrap, T))
        boot = a_T[idx].mean(axis=1) / b_T[idx].mean(axis=1)
        lo, hi = np.quantile(boot, [0.5 - level / 2, 0.5 + level / 2])
        se = float(boot.std(ddof=1))
        return PGREstimate(ratio, float(lo), float(hi), se, b_bar, b_se, True, level)
    if T > 1:
        cov = np.cov(np.stack([a_T, b_T]), ddof=1)
        var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (T * b_bar**2)
        se = float(math.sqrt(max(var, 0.0)))
    else:
        se = 0.0
    return PGREstimate(ratio, ratio - z * se, ratio + z * se, se, b_bar, b_se, True, level)


def bootstrap_mean(values, *, n_bootstrap: int, level: float, seed: int = 0) -> dict:
    """Mean of ``values`` with a percentile bootstrap interval: ``{"mean", "lo", "hi", "n"}``.

    ``n_bootstrap`` resamples of the values with replacement (seeded by ``seed``); ``lo``/``hi``
    are the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of their means. NaN interval for
    fewer than two values, NaN mean for none.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    if v.size < 2:
        return {"mean": float(v.mean()), "lo": math.nan, "hi": math.nan, "n": int(v.size)}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_bootstrap, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return {"mean": float(v.mean()), "lo": float(lo), "hi": float(hi), "n": int(v.size)}


def disagreement(a_T, b_T, *, exact: bool) -> float:
    """How often two answerers differ on the same items (the student's misfit to its supervisor):
    with ``exact``, the fraction of items whose values differ; otherwise the mean squared
    difference of numeric scores. NaN for no items."""
    a, b = np.asarray(a_T, dtype=object if exact else np.float64), np.asarray(b_T, dtype=object if exact else np.float64)
    if a.shape != b.shape:
        raise ValueError(f"disagreement of {a.shape} and {b.shape} items: pair them by item first")
    if a.size == 0:
        return math.nan
    if exact:
        return float(np.mean([x != y for x, y in zip(a.reshape(-1), b.reshape(-1))]))
    return float(np.mean((a - b) ** 2))
