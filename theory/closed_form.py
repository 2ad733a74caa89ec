"""Closed forms and bounds of the latent-concept model (``docs/theory.md`` §2-4).

Every function takes a :class:`~theory.model.Problem` (batch it with ``jax.vmap``) and returns
arrays. Equation numbers refer to ``docs/theory.md``.

The arithmetic of each function is one jitted program: called eagerly, a few dozen tiny
operations would each be traced and compiled on their own (a cold ``simulate.py`` spent seconds on
them). Argument checks and warnings run first, outside the program, on the values they can see.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from theory.model import Problem
from theory.validation import concrete
from w2s_jax.core import excess_risk

__all__ = [
    "eps_P2",
    "eps_W2",
    "ridge_population",
    "gd_population",
    "segment_bound",
    "orthogonal_bound",
    "refine_population",
    "refine_risk_bound",
    "residual_cov_2x2",
    "rho",
    "chernoff_terms",
    "chernoff_bound",
    "decay_exponent",
    "identifiable",
    "ols_excess_risk",
    "S_GRID",
    "IsotropyWarning",
]

# Grid of Chernoff parameters s in (0, 1] (step 1/2000, so s = 1 and s = 0.1 are on it); any s
# gives a valid bound, the grid only tightens it. numpy, so that importing this module starts no
# JAX backend; it takes the caller's precision when it meets a JAX array.
S_GRID = np.arange(1, 2001) / 2000.0


class IsotropyWarning(UserWarning):
    """A guarantee that needs ``Sigma = I`` was computed for a problem with ``Sigma != I``.

    The value is still well defined (e.g. the minimum risk over the segment), but it is no longer
    the bound its docstring states, so a run with ``feature_scales`` gets its numbers and a warning
    instead of an error.
    """


def _warn_unless_isotropic(p: Problem, what: str) -> None:
    """Warn when ``p.Sigma_DxD`` is known and not the identity (traced values cannot be inspected)."""
    Sigma = concrete(p.Sigma_DxD)
    if Sigma is not None and not np.array_equal(Sigma, np.broadcast_to(np.eye(Sigma.shape[-1]), Sigma.shape)):
        scales = np.sqrt(np.diagonal(Sigma, axis1=-2, axis2=-1))
        warnings.warn(f"{what} holds for Sigma = I only (docs/theory.md), but feature scales are "
                      f"{np.round(scales, 4).tolist()}: the value is not a guaranteed bound here",
                      IsotropyWarning, stacklevel=3)


def _check_nonnegative(name: str, values) -> None:
    """ValueError naming ``name`` unless every known value is finite and >= 0."""
    v = concrete(values)
    if v is not None and not np.all(np.isfinite(v) & (v >= 0)):
        got = f"{name}={v.tolist()}" if v.ndim == 0 else f"{v[~(np.isfinite(v) & (v >= 0))].tolist()} in {name}"
        raise ValueError(f"{name} must be finite and >= 0, got {got}")


@jax.jit
def eps_P2(p: Problem) -> jax.Array:
    """``eps_P^2 = R(beta_P)``: risk of the pre-trained strong model alone."""
    return excess_risk(p.beta_P, p.beta_star, p.Sigma_DxD)


@jax.jit
def eps_W2(p: Problem) -> jax.Array:
    """``eps_W^2 = R(beta_weak)``: risk of the weak supervisor alone."""
    return excess_risk(p.beta_weak, p.beta_star, p.Sigma_DxD)


def ridge_population(p: Problem, lam_L: jax.Array, beta_label: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Population fine-tuning with shrinkage towards ``beta_P`` (eq. T.11).

    ``b(lam) = argmin_b E(y - b^T x)^2 + lam ||b - beta_P||^2 = (Sigma + lam I)^{-1} (Sigma beta_label
    + lam beta_P)``, with labels whose regression function is ``beta_label`` (default: weak). For
    ``Sigma = I`` its risk is ``||(beta_label - beta_star) + lam (beta_P - beta_star)||^2 / (1 + lam)^2``.

    Arguments:
      p: the problem.
      lam_L: ridge strengths, each finite and >= 0 (a negative one can make ``Sigma + lam I``
        singular or indefinite: no minimiser). Checked when known; under tracing an invalid
        strength gives NaN.
      beta_label: the labels' regression function (default ``p.beta_weak``).

    Returns:
      ``(b_LxD, risk_L)``.

    Raises:
      ValueError: naming the strengths that are negative, NaN or infinite.
    """
    _check_nonnegative("lam_L", lam_L)
    return _ridge_population(p, jnp.asarray(lam_L), p.beta_weak if beta_label is None else beta_label)


@jax.jit
def _ridge_population(p: Problem, lam_L: jax.Array, beta_label: jax.Array) -> tuple[jax.Array, jax.Array]:
    eye = jnp.eye(p.beta_P.shape[-1], dtype=p.beta_P.dtype)

    def one(lam):
        return jnp.linalg.solve(p.Sigma_DxD + lam * eye, p.Sigma_DxD @ beta_label + lam * p.beta_P)

    lam_L = lam_L.astype(p.beta_P.dtype)
    valid_L = jnp.isfinite(lam_L) & (lam_L >= 0)
    b_LxD = jnp.where(valid_L[:, None], jax.vmap(one)(jnp.where(valid_L, lam_L, 0.0)), jnp.nan)
    return b_LxD, excess_risk(b_LxD, p.beta_star, p.Sigma_DxD)


def gd_population(p: Problem, t_T: jax.Array, lr: float, beta_label: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Population gradient descent on ``(1/2) E(y - b^T x)^2`` from ``beta_P`` (eq. T.12).

    ``b_t = beta_label + (I - lr Sigma)^t (beta_P - beta_label)``: for ``Sigma = I`` the path runs
    along the segment from ``beta_P`` (t = 0) to ``beta_label`` (t -> inf).

    Arguments:
      p: the problem.
      t_T: step counts, each finite and >= 0.
      lr: step size, ``0 < lr <= 2 / lambda_max(Sigma)``: beyond that limit ``|1 - lr lambda| > 1``
        along the top eigenvector and the iterates diverge geometrically (lr = 3 with Sigma = I
        reaches risks of 1e60 in 100 steps), which is no fine-tuning anyone runs.
      beta_label: the labels' regression function (default ``p.beta_weak``).

    Returns:
      ``(b_TxD, risk_T)``.

    Raises:
      ValueError: for a bad step count, or a step size outside ``(0, 2 / lambda_max(Sigma)]``
        (checked when ``lr`` and ``Sigma`` are known, i.e. not traced).
    """
    _check_nonnegative("t_T", t_T)
    Sigma, step = concrete(p.Sigma_DxD), concrete(lr)
    if step is not None:
        if step.ndim or not np.isfinite(step) or step <= 0:
            raise ValueError(f"lr must be a finite number > 0, got lr={step.tolist()}")
        if Sigma is not None and Sigma.ndim == 2:
            lam_max = float(np.linalg.eigvalsh(Sigma)[-1])
            if step * lam_max > 2:
                raise ValueError(f"lr={float(step)} exceeds the stability limit 2 / lambda_max(Sigma) = "
                                 f"{2 / lam_max:.6g} (lambda_max(Sigma) = {lam_max:.6g}): gradient descent diverges")
    return _gd_population(p, jnp.asarray(t_T), lr, p.beta_weak if beta_label is None else beta_label)


@jax.jit
def _gd_population(p: Problem, t_T: jax.Array, lr, beta_label: jax.Array) -> tuple[jax.Array, jax.Array]:
    s_D = jnp.diag(p.Sigma_DxD)  # the model's Sigma is diagonal
    t_T = t_T.astype(p.beta_P.dtype)
    shrink_TxD = jnp.power(1.0 - lr * s_D[None, :], t_T[:, None])
    b_TxD = beta_label[None, :] + shrink_TxD * (p.beta_P - beta_label)[None, :]
    return b_TxD, excess_risk(b_TxD, p.beta_star, p.Sigma_DxD)


def segment_bound(p: Problem) -> jax.Array:
    """The fine-tuning lower bound: ``min_{s in [0,1]} R((1 - s) beta_P + s beta_weak)`` (eq. T.13).

    Every population ridge or gradient-descent estimator (Sigma = I) lies on this segment, and so
    does the mean of the finite-n ridge estimators (rotation invariance of the Gaussian design), so
    their expected risk is at least this. Positive whenever beta_star is not on the segment.

    With ``Sigma != I`` the paths leave the segment (``docs/theory.md``, remark after Proposition
    2.2) and can go below this value, so the function then warns (:class:`IsotropyWarning`) and
    still returns the segment minimum: the experiments print it as a reference value, and an
    error would stop a run with ``feature_scales`` whose other claims hold for any Sigma.
    """
    _warn_unless_isotropic(p, "segment_bound as a lower bound on fine-tuning")
    return _segment_bound(p)


@jax.jit
def _segment_bound(p: Problem) -> jax.Array:
    a = p.beta_P - p.beta_star
    c = p.beta_weak - p.beta_star
    diff = c - a
    denom = diff @ p.Sigma_DxD @ diff
    s = jnp.where(denom > 0, jnp.clip(-(a @ p.Sigma_DxD @ diff) / jnp.where(denom > 0, denom, 1.0), 0.0, 1.0), 0.0)
    b = (1 - s) * p.beta_P + s * p.beta_weak
    return excess_risk(b, p.beta_star, p.Sigma_DxD)


@jax.jit
def orthogonal_bound(eps_p2: jax.Array, eps_w2: jax.Array) -> jax.Array:
    """``eps_P^2 eps_W^2 / (eps_P^2 + eps_W^2)``: :func:`segment_bound` when the errors are orthogonal."""
    return eps_p2 * eps_w2 / (eps_p2 + eps_w2)


def refine_population(p: Problem, E_pi_K: jax.Array, lam: float = 0.0) -> jax.Array:
    """Population risk of refine-then-fit (eq. T.15).

    With infinitely many refined labels ``sum_k w_k beta_k^T x`` (w independent of x), least squares
    recovers ``beta_ref = sum_k E[w_k] beta_k``, so the risk is ``||B^T E[w] - beta_star||^2_Sigma``;
    with shrinkage ``lam`` towards ``beta_P`` it is that of :func:`ridge_population` at ``beta_ref``.
    """
    _check_nonnegative("lam", lam)
    return _refine_population(p, E_pi_K, lam)


@jax.jit
def _refine_population(p: Problem, E_pi_K: jax.Array, lam) -> jax.Array:
    _, risk = _ridge_population(p, jnp.reshape(lam, (1,)), E_pi_K @ p.B_KxD)
    return risk[0]


def refine_risk_bound(p: Problem, err: jax.Array) -> jax.Array:
    """``2 err^2``, with ``err = 1 - E[pi_star]``: the bound of eq. T.15 on :func:`refine_population`.

    ``R_ref = ||E w - e_{k*}||^2 <= (1 - E w_*)^2 + (sum_{k != k*} E w_k)^2`` needs orthonormal
    concepts in the Sigma geometry, i.e. ``Sigma = I`` here. With other feature scales the risk
    weights each concept's error by its scale and can exceed this (2.1x for ``d = 6, K = 5``,
    biased ``delta = 1``, scales ``(2, 1, 1, 1, 1, 0.5)``, at every ``n_icl <= 8``); the function then warns
    (:class:`IsotropyWarning`) rather than refuses, for the same reason as :func:`segment_bound`.
    """
    _warn_unless_isotropic(p, "risk <= 2 (1 - E pi*)^2 (eq. T.15)")
    return _twice_square(err)


@jax.jit
def _twice_square(err: jax.Array) -> jax.Array:
    return 2 * jnp.square(err)


@jax.jit
def residual_cov_2x2(p: Problem) -> jax.Array:
    """``C_k``: covariance of ``(y' - beta_k^T x, y' - beta_star^T x)`` for every k (eq. T.16).

    Returns:
      ``C_Kx2x2``.
    """
    R_k = p.beta_weak[None, :] - p.B_KxD
    R_star = p.beta_weak - p.beta_star
    s2 = jnp.square(p.sigma_weak)
    c11 = jnp.einsum("kd,de,ke->k", R_k, p.Sigma_DxD, R_k) + s2
    c12 = R_k @ p.Sigma_DxD @ R_star + s2
    c22 = (R_star @ p.Sigma_DxD @ R_star + s2) * jnp.ones_like(c11)
    return jnp.stack([jnp.stack([c11, c12], -1), jnp.stack([c12, c22], -1)], -2)


@jax.jit
def rho(p: Problem, s_S: jax.Array = S_GRID) -> jax.Array:
    """Per-demonstration Chernoff exponent ``rho_k(s) = (1/2) log det(I_2 + C_k M(s))`` (eq. T.17).

    ``M(s) = (s / sigma^2) diag(1, -1)``, and ``exp(-rho_k(s)) = E[(p_k(y'|x) / p_star(y'|x))^s]``.
    The Gaussian integral exists only when ``C_k^{-1} + M(s)`` is positive definite; elsewhere the
    moment is infinite and ``rho = -inf``.

    Returns:
      ``rho_KxS``.
    """
    C = residual_cov_2x2(p)[:, None]  # K x 1 x 2 x 2
    m = (s_S / jnp.square(p.sigma))[None, :]  # 1 x S
    a, b, c = C[..., 0, 0], C[..., 0, 1], C[..., 1, 1]
    # I + C M with M = m diag(1, -1): [[1 + a m, -b m], [b m, 1 - c m]].
    det = (1 + a * m) * (1 - c * m) + b * b * m * m
    # C^{-1} + M > 0  <=>  I + C^{1/2} M C^{1/2} > 0  <=>  trace and determinant of I + C M positive.
    trace = 2 + (a - c) * m
    valid = (det > 0) & (trace > 0)
    return jnp.where(valid, 0.5 * jnp.log(jnp.where(valid, det, 1.0)), -jnp.inf)


def chernoff_terms(p: Problem, n_icl: jax.Array, s_S: jax.Array = S_GRID) -> jax.Array:
    """``inf_s (alpha_k / alpha_star)^s exp(-n_icl rho_k(s))`` for each k (0 at k = k_star).

    ``E[pi_k] <= E[min(1, pi_k / pi_star)] <= E[(pi_k / pi_star)^s]`` for s in (0, 1], and the
    demonstrations are independent, which gives eq. T.18.

    Arguments:
      p: the problem.
      n_icl: number of demonstrations, finite and >= 0 (checked when known; NaN when traced and
        negative). At ``n_icl = 0`` the product over demonstrations is empty, so each term is the
        prior ratio ``min(1, alpha_k / alpha_star)`` even where the moment ``rho_k(s)`` is infinite.
      s_S: the grid of Chernoff parameters in (0, 1].

    Raises:
      ValueError: when ``n_icl`` is negative, NaN or infinite.
    """
    _check_nonnegative("n_icl", n_icl)
    return _chernoff_terms(p, n_icl, s_S)


@jax.jit
def _chernoff_terms(p: Problem, n_icl: jax.Array, s_S: jax.Array) -> jax.Array:
    rho_KxS = rho(p, s_S)
    log_ratio_K = jnp.log(p.alpha_K) - jnp.log(p.alpha_K[p.k_star])
    # n_icl * rho with 0 * (-inf) = 0: no demonstration, no likelihood-ratio moment (else NaN).
    n_rho_KxS = jnp.where(n_icl == 0, 0.0, n_icl * rho_KxS)
    log_terms_KxS = s_S[None, :] * log_ratio_K[:, None] - n_rho_KxS
    terms_K = jnp.exp(jnp.min(log_terms_KxS, axis=-1))
    terms_K = jnp.where((n_icl >= 0) & jnp.isfinite(n_icl), terms_K, jnp.nan)
    return terms_K.at[p.k_star].set(0.0)


def chernoff_bound(p: Problem, n_icl: jax.Array, s_S: jax.Array = S_GRID) -> jax.Array:
    """``1 - E[pi_star] <= min(1, sum_{k != k*} inf_s (alpha_k/alpha_*)^s exp(-n_icl rho_k(s)))`` (eq. T.18).

    ``n_icl`` as in :func:`chernoff_terms`.
    """
    _check_nonnegative("n_icl", n_icl)
    return _chernoff_bound(p, n_icl, s_S)


@jax.jit
def _chernoff_bound(p: Problem, n_icl: jax.Array, s_S: jax.Array) -> jax.Array:
    return jnp.minimum(1.0, jnp.sum(_chernoff_terms(p, n_icl, s_S)))


@jax.jit
def decay_exponent(p: Problem, s_S: jax.Array = S_GRID) -> jax.Array:
    """``rho* = min_{k != k*} sup_{s in (0,1]} rho_k(s)``: the rate of :func:`chernoff_bound` in n_icl.

    By Cramér's theorem the rate is tight: ``log(1 - E pi_star) = -rho* n_icl + O(log n_icl)``.
    """
    rho_max_K = jnp.max(rho(p, s_S), axis=-1)
    return jnp.min(rho_max_K.at[p.k_star].set(jnp.inf))


@jax.jit
def identifiable(p: Problem) -> jax.Array:
    """Whether refinement converges to beta_star: ``sup_s rho_k(s) > 0`` for every ``k != k*``.

    ``rho_k`` is concave with ``rho_k(0) = 0`` and ``rho_k'(0) = E[(y'-beta_k^T x)^2 - (y'-beta_star^T
    x)^2] / (2 sigma^2)``, so the condition is ``||beta_weak - beta_k||_Sigma > ||beta_weak -
    beta_star||_Sigma`` for every k != k* (eq. T.19): the weak labels must be closer, in expected
    squared error, to the target concept than to any other.
    """
    d2_K = excess_risk(p.B_KxD, p.beta_weak, p.Sigma_DxD)
    gap_K = (d2_K - d2_K[p.k_star]).at[p.k_star].set(jnp.inf)
    return jnp.all(gap_K > 0)


def ols_excess_risk(n: int, d: int, sigma_label: jax.Array) -> jax.Array:
    """``E R(b_OLS) = sigma_label^2 d / (n - d - 1)`` for unbiased labels and Gaussian design (n > d + 1)."""
    if n <= d + 1:
        raise ValueError(f"the OLS variance needs n > d + 1, got n={n}, d={d}")
    return _scaled_square(sigma_label, d / (n - d - 1))


@jax.jit
def _scaled_square(x: jax.Array, factor) -> jax.Array:
    return jnp.square(x) * factor
