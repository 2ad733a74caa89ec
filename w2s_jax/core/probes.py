"""Probes on cached features: L2-regularised logistic regression and k nearest neighbours.

A probe is a small frozen strategy: ``probe.fit(X_NxD, y_N)`` returns a fitted probe whose
``predict_proba(X_MxD)`` gives the probability of class 1 per row, and
``probe.cross_predict(X_NxD, y_N, folds_N)`` gives each row's prediction from a probe fitted
without the rows of its fold (the out-of-fold predictions label repair needs; see
:mod:`w2s_jax.core.label_repair`). Labels are probabilities of class 1 in [0, 1] (soft or hard).

Logistic regression minimises, over weights ``w`` on standardised features ``x~ = (x - mu) / sd``
(``mu``/``sd`` the weighted mean and standard deviation of the training rows; a constant feature
keeps ``sd = 1``) and an unpenalised bias ``b``::

    L(w, b) = sum_i a_i [softplus(z_i) - y_i z_i] / sum_i a_i + (l2 / 2) ||w||^2,   z_i = w . x~_i + b,

(``a_i`` row weights; the soft-label cross-entropy), which is scikit-learn's ``LogisticRegression``
on standardised features with ``C = 1 / (l2 N)``. It is fitted by damped Newton steps whose
direction is solved by conjugate gradients on Hessian-vector products (never forming the D x D
Hessian) and an Armijo backtracking line search, jitted; standardisation is applied inside the
products, so the folds of a cross-fit share one feature matrix and are fitted together under
``vmap`` (one compile). Timings against scikit-learn: docs/benchmarks.md.

kNN predicts the mean label of the ``k`` nearest training rows (cosine similarity or Euclidean
distance), brute force in row chunks, one compile per chunk shape.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LogisticProbe",
    "FittedLogistic",
    "KNNProbe",
    "FittedKNN",
    "padded_rows",
    "nearest_neighbours",
]

_MAX_LOGISTIC_FOLDS = 64  # a cross-fit holds one weight vector per fold


def _features(X_NxD, name: str = "X_NxD") -> jax.Array:
    X = jnp.asarray(X_NxD)
    if X.ndim != 2:
        raise ValueError(f"{name} must be (items, features), got shape {X.shape}")
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(jnp.float32)
    if not bool(jnp.all(jnp.isfinite(X))):
        raise ValueError(f"{name} has non-finite values")
    return X


def _labels(y_N, n: int, dtype) -> jax.Array:
    y = np.asarray(y_N, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"labels must be one per row, shape ({n},), got {y.shape}")
    if not (np.all(np.isfinite(y)) and y.min(initial=0.0) >= 0.0 and y.max(initial=1.0) <= 1.0):
        raise ValueError("labels must be probabilities of class 1 in [0, 1]")
    return jnp.asarray(y, dtype=dtype)


def _row_weights(weights_N, n: int, dtype) -> jax.Array:
    a = np.asarray(weights_N, dtype=np.float64)
    if a.shape != (n,) or not np.all(np.isfinite(a)) or a.min(initial=0.0) < 0.0 or a.sum() <= 0.0:
        raise ValueError(f"weights_N must be {n} finite non-negative row weights with a positive sum")
    return jnp.asarray(a / a.max(), dtype=dtype)


def _folds(folds_N, n: int) -> np.ndarray:
    f = np.asarray(folds_N)
    if f.shape != (n,) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"folds_N must be one integer fold id per row, shape ({n},), got {f.shape} {f.dtype}")
    return f


def padded_rows(n: int) -> int:
    """Rows a fit is compiled for: ``n`` rounded up to a multiple of ``2^(bits(n) - 4)`` (at most
    1/8 more rows; the padding rows get weight 0), so nearby dataset sizes share one compile."""
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


def _pad(Z, rows: int):
    return jnp.pad(Z, ((0, rows - Z.shape[0]),) + ((0, 0),) * (Z.ndim - 1))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # no overflow for large |z|


class _Config:
    """A probe's configuration: calling ``predict_proba`` on it is a mistake worth naming."""

    def predict_proba(self, X_MxD):
        raise TypeError(f"{type(self).__name__} is a configuration: call .fit(X, y) and use the fitted probe "
                        "it returns")


# --------------------------------------------------------------------------------------------- logistic


def _logistic_fit(X_NxD, y_N, a_N, l2, tol, *, max_steps: int, cg_steps: int):
    """Newton-CG fit of the objective in the module docstring; ``X_NxD`` should be roughly centred
    (the caller subtracts the overall mean) so the implicit standardisation loses no precision."""
    dtype = X_NxD.dtype
    A = jnp.sum(a_N)
    mu_D = (a_N @ X_NxD) / A
    var_D = jnp.maximum((a_N @ jnp.square(X_NxD)) / A - jnp.square(mu_D), 0.0)
    sd_D = jnp.where(var_D > jnp.finfo(dtype).eps * jnp.max(var_D), jnp.sqrt(var_D), 1.0)

    def margins(theta):
        w, b = theta
        v = w / sd_D
        return X_NxD @ v + (b - mu_D @ v)

    def loss(theta):
        z = margins(theta)
        return a_N @ (jax.nn.softplus(z) - y_N * z) / A + 0.5 * l2 * jnp.vdot(theta[0], theta[0])

    grad = jax.grad(loss)
    dot = lambda p, q: jnp.vdot(p[0], q[0]) + p[1] * q[1]  # noqa: E731
    axpy = lambda t, d, p: (p[0] + t * d[0], p[1] + t * d[1])  # noqa: E731

    def gmax(g):
        return jnp.maximum(jnp.max(jnp.abs(g[0])), jnp.abs(g[1]))

    def newton(state):
        theta, step, _, _ = state
        g, hvp = jax.linearize(grad, theta)
        forcing = jnp.minimum(0.5, jnp.sqrt(jnp.sqrt(dot(g, g))))  # inexact Newton: looser solves far away
        d, _ = jax.scipy.sparse.linalg.cg(hvp, (-g[0], -g[1]), tol=forcing, maxiter=cg_steps)
        slope = dot(g, d)
        d = jax.tree.map(lambda di, gi: jnp.where(slope < 0, di, -gi), d, g)  # a descent direction always
        slope = dot(g, d)
        f0 = loss(theta)

        def too_long(c):
            t, f = c
            return (f > f0 + 1e-4 * t * slope) & (t > 1e-8)

        t, _ = jax.lax.while_loop(too_long, lambda c: (c[0] / 2, loss(axpy(c[0] / 2, d, theta))),
                                  (jnp.asarray(1.0, dtype), loss(axpy(1.0, d, theta))))
        moved = t > 1e-8  # else no step decreases the loss: the fit is at rounding level, stop
        theta = axpy(jnp.where(moved, t, 0.0), d, theta)
        g_max = gmax(grad(theta))
        return theta, step + 1, jnp.where(moved, g_max, 0.0), g_max

    theta0 = (jnp.zeros(X_NxD.shape[1], dtype), jnp.zeros((), dtype))
    g0 = gmax(grad(theta0))
    state = (theta0, jnp.asarray(0), g0, g0)  # (parameters, steps, stopping measure, max |gradient|)
    (w, b), steps, _, g = jax.lax.while_loop(lambda s: (s[1] < max_steps) & (s[2] > tol), newton, state)
    return w, b, mu_D, sd_D, steps, g


_fit_one = jax.jit(_logistic_fit, static_argnames=("max_steps", "cg_steps"))


@functools.partial(jax.jit, static_argnames=("max_steps", "cg_steps"))
def _fit_folds(X_NxD, y_N, a_KxN, l2, tol, *, max_steps: int, cg_steps: int):
    """One fit per row of row weights ``a_KxN`` (a fold's training rows), all under one ``vmap``."""
    fit = functools.partial(_logistic_fit, max_steps=max_steps, cg_steps=cg_steps)
    return jax.vmap(fit, in_axes=(None, None, 0, None, None))(X_NxD, y_N, a_KxN, l2, tol)


@dataclasses.dataclass(frozen=True)
class FittedLogistic:
    """A fitted logistic probe: ``p = sigmoid(((x - mean_D) / scale_D) . w_D + b)``."""

    w_D: np.ndarray
    b: float
    mean_D: np.ndarray
    scale_D: np.ndarray
    steps: int  # Newton steps taken
    grad_max: float  # max |gradient| of the objective at the fit (converged when <= the probe's tol)

    def logits(self, X_MxD) -> np.ndarray:
        X = np.asarray(_features(X_MxD, "X_MxD"), dtype=np.float64)
        if X.shape[1] != self.w_D.shape[0]:
            raise ValueError(f"the probe was fitted on {self.w_D.shape[0]} features, X_MxD has {X.shape[1]}")
        return ((X - self.mean_D) / self.scale_D) @ self.w_D + self.b

    def predict_proba(self, X_MxD) -> np.ndarray:
        """Probability of class 1 per row, shape ``(M,)``."""
        return _sigmoid(self.logits(X_MxD))


@dataclasses.dataclass(frozen=True)
class LogisticProbe(_Config):
    """L2-regularised logistic regression on standardised features (objective: module docstring)."""

    l2: float = 1e-3  # penalty (l2 / 2) ||w||^2 added to the mean cross-entropy
    max_steps: int = 50  # Newton steps at most
    cg_steps: int = 100  # conjugate-gradient iterations per Newton step at most
    tol: float = 1e-7  # stop when max |gradient| <= tol (floored at 10 machine epsilons of the features' dtype)

    def __post_init__(self):
        if not self.l2 > 0.0:
            raise ValueError(f"l2 must be positive (an unregularised fit diverges on separable features), "
                             f"got {self.l2}")
        if self.max_steps < 1 or self.cg_steps < 1:
            raise ValueError(f"max_steps and cg_steps must be positive, got {self.max_steps}, {self.cg_steps}")

    def _tol(self, dtype) -> float:
        return max(self.tol, 10 * float(np.finfo(dtype).eps))

    def fit(self, X_NxD, y_N, *, weights_N=None) -> FittedLogistic:
        """Fit on rows ``X_NxD`` with labels ``y_N`` in [0, 1] (optional non-negative row weights)."""
        X = _features(X_NxD)
        y = _labels(y_N, X.shape[0], X.dtype)
        a = jnp.ones_like(y) if weights_N is None else _row_weights(weights_N, X.shape[0], X.dtype)
        if X.shape[0] < 2:
            raise ValueError(f"LogisticProbe needs at least 2 rows, got {X.shape[0]}")
        center, rows = jnp.mean(X, axis=0), padded_rows(X.shape[0])
        w, b, mu, sd, steps, g = _fit_one(_pad(X - center, rows), _pad(y, rows), _pad(a, rows),
                                          jnp.asarray(self.l2, X.dtype),
                                          jnp.asarray(self._tol(X.dtype), X.dtype),
                                          max_steps=self.max_steps, cg_steps=self.cg_steps)
        return FittedLogistic(np.asarray(w, np.float64), float(b), np.asarray(mu + center, np.float64),
                              np.asarray(sd, np.float64), int(steps), float(g))

    def cross_predict(self, X_NxD, y_N, folds_N) -> np.ndarray:
        """Each row's probability of class 1 from a probe fitted on the other folds' rows only
        (one fit per fold, all folds fitted together)."""
        X = _features(X_NxD)
        y = _labels(y_N, X.shape[0], X.dtype)
        folds = _folds(folds_N, X.shape[0])
        ids, fold_of_row = np.unique(folds, return_inverse=True)
        if not 2 <= ids.size <= _MAX_LOGISTIC_FOLDS:
            raise ValueError(f"LogisticProbe cross-fits one model per fold: needs 2 to {_MAX_LOGISTIC_FOLDS} folds, "
                             f"got {ids.size}")
        rows = padded_rows(X.shape[0])
        train_KxN = jnp.asarray(fold_of_row[None, :] != np.arange(ids.size)[:, None], X.dtype)
        X0 = X - jnp.mean(X, axis=0)
        w, b, mu, sd, _, _ = _fit_folds(_pad(X0, rows), _pad(y, rows), _pad(train_KxN.T, rows).T,
                                        jnp.asarray(self.l2, X.dtype),
                                        jnp.asarray(self._tol(X.dtype), X.dtype),
                                        max_steps=self.max_steps, cg_steps=self.cg_steps)
        V_KxD = w / sd
        z_NxK = X0 @ V_KxD.T + (b - jnp.sum(mu * V_KxD, axis=1))[None, :]
        z_N = np.take_along_axis(np.asarray(z_NxK, np.float64), fold_of_row[:, None], axis=1)[:, 0]
        return _sigmoid(z_N)


# --------------------------------------------------------------------------------------------- kNN


def _unit(Z):
    return Z / jnp.maximum(jnp.linalg.norm(Z, axis=1, keepdims=True), jnp.finfo(Z.dtype).tiny)


@functools.partial(jax.jit, static_argnames=("k", "cosine"))
def _knn_indices(Q_MxD, q_fold_M, R_NxD, r_bias_N, r_fold_N, *, k: int, cosine: bool):
    """Indices of each query's ``k`` nearest reference rows (nearest first), skipping rows of the
    query's fold.

    Cosine: ``R_NxD`` holds unit rows and the score is ``q^ . r``; Euclidean: the score is
    ``2 q . r - |r|^2`` (``r_bias_N = -|r|^2``), minus the squared distance up to ``|q|^2``.
    """
    score_MxN = (_unit(Q_MxD) @ R_NxD.T) if cosine else (2.0 * Q_MxD @ R_NxD.T + r_bias_N[None, :])
    score_MxN = jnp.where(q_fold_M[:, None] == r_fold_N[None, :], -jnp.inf, score_MxN)
    return jax.lax.top_k(score_MxN, k)[1]


def nearest_neighbours(Q_MxD, R_NxD, *, k: int, metric: str = "cosine", q_fold_M=None, r_fold_N=None,
                       chunk: int = 1024) -> np.ndarray:
    """``(M, k)`` indices into ``R_NxD`` of each query row's ``k`` nearest rows (cosine similarity or
    Euclidean distance), nearest first; with fold ids, a query never gets a row of its own fold."""
    Q, R = _features(Q_MxD, "Q_MxD"), _features(R_NxD, "R_NxD")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    q_fold = jnp.full(Q.shape[0], -1, jnp.int32) if q_fold_M is None else jnp.asarray(q_fold_M, jnp.int32)
    r_fold = jnp.zeros(R.shape[0], jnp.int32) if r_fold_N is None else jnp.asarray(r_fold_N, jnp.int32)
    return _knn_chunked(Q, q_fold, R.astype(Q.dtype), r_fold, k=k, metric=metric, chunk=chunk)


def _knn_chunked(Q, q_fold, R, r_fold, *, k: int, metric: str, chunk: int) -> np.ndarray:
    cosine = metric == "cosine"
    R, r_bias = (_unit(R), jnp.zeros(R.shape[0], R.dtype)) if cosine else (R, -jnp.sum(jnp.square(R), axis=1))
    M = Q.shape[0]
    rows = min(chunk, M)
    out = []
    for start in range(0, M, rows):  # pad the last chunk: one compile per chunk shape
        q, f = Q[start:start + rows], q_fold[start:start + rows]
        pad = rows - q.shape[0]
        q = jnp.pad(q, ((0, pad), (0, 0)))
        f = jnp.pad(f, (0, pad), constant_values=-1)
        out.append(np.asarray(_knn_indices(q, f, R, r_bias, r_fold, k=k, cosine=cosine))[: rows - pad])
    return np.concatenate(out)


@dataclasses.dataclass(frozen=True)
class FittedKNN:
    """A fitted kNN probe: the reference rows and their labels."""

    X_NxD: jax.Array
    y_N: jax.Array
    k: int
    metric: str
    chunk: int

    def predict_proba(self, X_MxD) -> np.ndarray:
        """Mean label of each row's ``k`` nearest reference rows, shape ``(M,)``."""
        Q = _features(X_MxD, "X_MxD").astype(self.X_NxD.dtype)
        if Q.shape[1] != self.X_NxD.shape[1]:
            raise ValueError(f"the probe was fitted on {self.X_NxD.shape[1]} features, X_MxD has {Q.shape[1]}")
        n = self.X_NxD.shape[0]
        idx_MxK = _knn_chunked(Q, jnp.full(Q.shape[0], -1, jnp.int32), self.X_NxD, jnp.zeros(n, jnp.int32),
                               k=self.k, metric=self.metric, chunk=self.chunk)
        return np.asarray(self.y_N, np.float64)[idx_MxK].mean(axis=1)


@dataclasses.dataclass(frozen=True)
class KNNProbe(_Config):
    """Mean label of the ``k`` nearest training rows."""

    k: int = 20  # neighbours averaged
    metric: str = "cosine"  # "cosine" similarity or "euclidean" distance
    chunk: int = 1024  # query rows per compiled call (memory: chunk x N scores)

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.metric not in ("cosine", "euclidean"):
            raise ValueError(f"metric must be 'cosine' or 'euclidean', got {self.metric!r}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be positive, got {self.chunk}")

    def fit(self, X_NxD, y_N) -> FittedKNN:
        X = _features(X_NxD)
        if self.k > X.shape[0]:
            raise ValueError(f"k = {self.k} neighbours but only {X.shape[0]} training rows")
        return FittedKNN(X, _labels(y_N, X.shape[0], X.dtype), self.k, self.metric, self.chunk)

    def cross_predict(self, X_NxD, y_N, folds_N) -> np.ndarray:
        """Each row's mean label over its ``k`` nearest rows outside its own fold (with one fold per
        row, leave-one-out: every other row is a candidate neighbour)."""
        X = _features(X_NxD)
        y = _labels(y_N, X.shape[0], X.dtype)
        _, fold_of_row = np.unique(_folds(folds_N, X.shape[0]), return_inverse=True)
        largest = np.bincount(fold_of_row).max()
        if self.k > X.shape[0] - largest:
            raise ValueError(f"k = {self.k} neighbours but a fold leaves only {X.shape[0] - largest} rows outside it")
        f = jnp.asarray(fold_of_row, jnp.int32)
        idx_NxK = _knn_chunked(X, f, X, f, k=self.k, metric=self.metric, chunk=self.chunk)
        return np.asarray(y, np.float64)[idx_NxK].mean(axis=1)
