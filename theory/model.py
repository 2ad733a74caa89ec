"""The latent-concept transfer model (``docs/theory.md`` §1) as typed configs and one pytree.

A pre-trained strong model holds K concepts, the orthonormal rows ``beta_k`` of ``B_KxD``, with
prior ``alpha``; its predictive is ``p_P(y|x) = sum_k alpha_k N(y; beta_k^T x, sigma^2)`` (eq. T.1)
and its regression function is ``beta_P = alpha^T B``. The target concept is ``beta_star =
beta_{k_star}``. A weak supervisor labels with ``y' ~ N(beta_weak^T x, sigma_weak^2)``, built by a
:class:`Supervisor` strategy (eq. T.3):

* :class:`Biased`: ``beta_weak = beta_star + delta u``, ``u`` a unit vector orthogonal to span(B);
* :class:`Noisy`: ``beta_weak = beta_star``, ``sigma_weak^2 = sigma^2 + eta^2``;
* :class:`Misaligned`: ``beta_weak = (1 - gamma) beta_star + gamma beta_j + delta u``;
* :class:`Angled`: ``beta_weak = beta_star + delta (cos(theta) v + sin(theta) u)``, ``v`` the unit
  vector from ``beta_star`` towards a rival concept: a bias at angle theta to span(B).

Without loss of generality (rotation invariance when ``Sigma = I``), ``beta_k = e_k`` and
``u = e_K``. :func:`make_problem` turns a (:class:`ConceptModel`, :class:`Supervisor`) pair into a
:class:`Problem`, a pytree of arrays that ``jax.vmap`` can batch over a parameter grid.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from theory.validation import integer, real

__all__ = ["ConceptModel", "Supervisor", "Biased", "Noisy", "Misaligned", "Angled", "Problem", "make_problem",
           "stack_problems"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConceptModel:
    """The strong model's concepts, prior and noise, and the feature distribution."""

    d: int = 20  # feature dimension
    K: int = 5  # number of latent concepts, K <= d
    alpha: tuple[float, ...] | None = None  # prior over concepts; None = uniform
    k_star: int = 0  # index of the target (aligned) concept
    sigma: float = 0.5  # the strong model's (and gold labels') noise scale
    feature_scales: tuple[float, ...] | None = None  # Sigma = diag(scales^2); None = identity

    def __post_init__(self):
        d, K, k_star = integer("d", self.d), integer("K", self.K), integer("k_star", self.k_star)
        if d < 1:
            raise ValueError(f"d must be >= 1, got d={d}")
        if not 1 <= K <= d:
            raise ValueError(f"need 1 <= K <= d, got K={K}, d={d}")
        if not 0 <= k_star < K:
            raise ValueError(f"k_star must be in [0, K={K}), got k_star={k_star}")
        if not real("sigma", self.sigma) > 0:
            raise ValueError(f"sigma must be > 0, got sigma={self.sigma}")
        if self.alpha is not None:
            alpha = _reals("alpha", self.alpha)
            if len(alpha) != K:
                raise ValueError(f"alpha has {len(alpha)} entries but K={K}")
            if min(alpha) <= 0 or abs(sum(alpha) - 1.0) > 1e-9:
                raise ValueError(f"alpha must be on the open simplex (positive, summing to 1), got alpha={self.alpha}")
        if self.feature_scales is not None:
            scales = _reals("feature_scales", self.feature_scales)
            if len(scales) != d or min(scales) <= 0:
                raise ValueError(
                    f"feature_scales must be d={d} positive numbers, got feature_scales={self.feature_scales}")

    @classmethod
    def tiny(cls) -> "ConceptModel":
        return cls(d=6, K=3, sigma=0.5)

    @classmethod
    def paper(cls) -> "ConceptModel":
        """The default setting of ``theory/simulate.py`` (``docs/theory.md`` §5)."""
        return cls(d=20, K=5, sigma=0.5)

    @property
    def alpha_K(self) -> tuple[float, ...]:
        return self.alpha if self.alpha is not None else (1.0 / self.K,) * self.K


def _reals(name: str, values) -> tuple[float, ...]:
    """A sequence of finite reals; NaN would slip past every ``<``/``>`` test, so it is refused here."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a sequence of numbers, got {name}={values!r}")
    return tuple(real(f"{name}[{i}]", v) for i, v in enumerate(values))


class Supervisor(Protocol):
    """Builds the weak supervisor ``(beta_weak, sigma_weak)`` for a concept model."""

    name: str

    def weak(self, model: ConceptModel, B_KxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _u(model: ConceptModel, delta: float) -> np.ndarray:
    if delta != 0 and model.K >= model.d:
        raise ValueError(f"a bias direction orthogonal to span(B) needs K < d, got K={model.K}, d={model.d}")
    u = np.zeros(model.d)
    u[min(model.K, model.d - 1)] = 1.0 if delta != 0 else 0.0
    return u


@dataclasses.dataclass(frozen=True, kw_only=True)
class Biased:
    """``beta_weak = beta_star + delta u``, ``sigma_weak = sigma``."""

    delta: float = 1.0  # size of the bias orthogonal to every concept

    name = "biased"

    def __post_init__(self):
        if not real("delta", self.delta) >= 0:
            raise ValueError(f"delta must be >= 0, got delta={self.delta}")

    def weak(self, model, B_KxD):
        beta_weak = B_KxD[model.k_star] + self.delta * _u(model, self.delta)
        return beta_weak, np.asarray(model.sigma)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Noisy:
    """``beta_weak = beta_star``, ``sigma_weak^2 = sigma^2 + eta^2``."""

    eta: float = 1.0  # extra label-noise scale of the weak supervisor

    name = "noisy"

    def __post_init__(self):
        if not real("eta", self.eta) >= 0:
            raise ValueError(f"eta must be >= 0, got eta={self.eta}")

    def weak(self, model, B_KxD):
        return B_KxD[model.k_star], np.sqrt(np.asarray(model.sigma**2 + self.eta**2))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Misaligned:
    """``beta_weak = (1 - gamma) beta_star + gamma beta_j + delta u``, ``sigma_weak = sigma``."""

    gamma: float = 0.3  # weight on the wrong concept j; refinement breaks at gamma >= 1/2
    delta: float = 0.0  # extra bias orthogonal to span(B)
    j: int = 1  # the competing concept, j != k_star

    name = "misaligned"

    def __post_init__(self):
        if not 0.0 <= real("gamma", self.gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got gamma={self.gamma}")
        if not real("delta", self.delta) >= 0:
            raise ValueError(f"delta must be >= 0, got delta={self.delta}")
        integer("j", self.j)

    def weak(self, model, B_KxD):
        if not 0 <= self.j < model.K or self.j == model.k_star:
            raise ValueError(f"j must be a concept other than k_star={model.k_star} in [0, K={model.K}), got j={self.j}")
        beta = (1 - self.gamma) * B_KxD[model.k_star] + self.gamma * B_KxD[self.j]
        return beta + self.delta * _u(model, self.delta), np.asarray(model.sigma)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Angled:
    """``beta_weak = beta_star + delta (cos(theta) v + sin(theta) u)``, ``sigma_weak = sigma``.

    ``v = (beta_r - beta_star) / sqrt(2)`` points inside span(B) towards the rival concept ``r``; ``u``
    is orthogonal to span(B). ``theta = 90`` is :class:`Biased` (bias outside every concept),
    ``theta = 0`` a bias inside span(B), towards ``beta_r``.
    """

    delta: float = 1.0  # size of the bias
    theta: float = 90.0  # its angle to span(B), in degrees, in [0, 90]
    rival: int = 1  # the concept the in-span part points to, != k_star

    name = "angled"

    def __post_init__(self):
        if not real("delta", self.delta) >= 0:
            raise ValueError(f"delta must be >= 0, got delta={self.delta}")
        if not 0.0 <= real("theta", self.theta) <= 90.0:
            raise ValueError(f"theta must be in [0, 90] degrees, got theta={self.theta}")
        integer("rival", self.rival)

    def components(self) -> tuple[float, float]:
        """``(delta cos theta, delta sin theta)``: the bias inside and outside span(B), exact at 0 and 90."""
        rad = np.deg2rad(self.theta)
        inside = 0.0 if self.theta == 90.0 else float(np.cos(rad))
        outside = 0.0 if self.theta == 0.0 else float(np.sin(rad))
        return self.delta * inside, self.delta * outside

    def weak(self, model, B_KxD):
        if not 0 <= self.rival < model.K or self.rival == model.k_star:
            raise ValueError(f"rival must be a concept other than k_star={model.k_star} in [0, K={model.K}), "
                             f"got rival={self.rival}")
        inside, outside = self.components()
        v = (B_KxD[self.rival] - B_KxD[model.k_star]) / np.sqrt(2.0)
        beta = B_KxD[model.k_star] + inside * v
        return beta + outside * _u(model, outside), np.asarray(model.sigma)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["B_KxD", "alpha_K", "beta_star", "beta_P", "beta_weak", "sigma", "sigma_weak", "Sigma_DxD"],
    meta_fields=["k_star"],
)
@dataclasses.dataclass(frozen=True)
class Problem:
    """Every array of one (model, supervisor) instance; vmappable over a stacked grid."""

    B_KxD: jax.Array
    alpha_K: jax.Array
    beta_star: jax.Array
    beta_P: jax.Array
    beta_weak: jax.Array
    sigma: jax.Array
    sigma_weak: jax.Array
    Sigma_DxD: jax.Array
    k_star: int


def make_problem(model: ConceptModel, supervisor: Supervisor, dtype=None) -> Problem:
    """Concepts ``beta_k = e_k``, ``beta_P = alpha^T B``, and the supervisor's ``beta_weak``.

    Built in float64 numpy and moved to JAX once, in ``dtype`` (default: JAX's float, so float64
    under ``jax.enable_x64``): a few transfers instead of a dozen tiny compiled programs.
    """
    dtype = dtype or jnp.result_type(float)
    B_KxD = np.eye(model.K, model.d)
    alpha_K = np.asarray(model.alpha_K, dtype=np.float64)
    beta_weak, sigma_weak = supervisor.weak(model, B_KxD)
    scales = np.ones(model.d) if model.feature_scales is None else np.asarray(model.feature_scales, dtype=np.float64)
    arrays = {
        "B_KxD": B_KxD,
        "alpha_K": alpha_K,
        "beta_star": B_KxD[model.k_star],
        "beta_P": alpha_K @ B_KxD,
        "beta_weak": beta_weak,
        "sigma": model.sigma,
        "sigma_weak": sigma_weak,
        "Sigma_DxD": np.diag(np.square(scales)),
    }
    # device_put of a host array in its final dtype compiles nothing (jnp.asarray would, per shape).
    return Problem(**{k: jax.device_put(np.asarray(v, dtype)) for k, v in arrays.items()}, k_star=model.k_star)


def stack_problems(problems: list[Problem]) -> Problem:
    """Stack problems along a new leading axis, for ``jax.vmap`` over a parameter grid.

    Concrete problems are stacked on the host (one transfer per field, no compiled ``stack``).
    """
    def stack(*xs):
        if any(isinstance(x, jax.core.Tracer) for x in xs):
            return jnp.stack(xs)
        return jax.device_put(np.stack([np.asarray(x) for x in xs]))

    return jax.tree.map(stack, *problems)
