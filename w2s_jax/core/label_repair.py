"""Probe-based repair of weak labels on cached features: relabelling and filtering.

A weak supervisor's labels are noisy; a probe fitted on the strong model's features to those labels
averages the noise over similar examples (EleutherAI's w2s: kNN "zeta" relabelling and filtering,
logistic-regression relabelling). Every prediction used here is out of fold: the probe that
predicts an example was fitted without that example's fold, so an example never labels itself
(a probe that saw the label would mostly hand it back, noise included).

* :func:`out_of_fold` — each example's prediction by a probe fitted on the other folds.
* :func:`relabel` — replace the weak labels by those predictions (all of them, or only the
  ``fraction`` that disagree most).
* :func:`filter_by_probe` — drop the ``contamination`` fraction of examples whose weak label is
  furthest from the prediction; returns the kept indices.

A probe is any object with ``cross_predict(X_NxD, y_N, folds_N) -> (N,)`` (the probes of
:mod:`w2s_jax.core.probes`).
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["fold_ids", "out_of_fold", "relabel", "filter_by_probe"]


def fold_ids(n: int, n_folds: int | None, *, key: jax.Array | None) -> np.ndarray:
    """Fold id per example: a random balanced split into ``n_folds`` folds (by ``key``), or one
    fold per example (leave-one-out) when ``n_folds`` is None."""
    if n_folds is None:
        return np.arange(n)
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must be between 2 and the number of examples {n}, got {n_folds}")
    if key is None:
        raise ValueError("a random split into folds needs key=jax.random.key(...) (or n_folds=None: leave-one-out)")
    return np.asarray(jax.random.permutation(key, n)) % n_folds


def _weak(weak_labels_N) -> np.ndarray:
    y = np.asarray(weak_labels_N, dtype=np.float64)
    if y.ndim != 1 or not (np.all(np.isfinite(y)) and y.min(initial=0.0) >= 0.0 and y.max(initial=1.0) <= 1.0):
        raise ValueError("weak_labels_N must be one probability of class 1 in [0, 1] per example")
    return y


def out_of_fold(probe, X_NxD, weak_labels_N, *, key: jax.Array | None = None, n_folds: int | None = 5) -> np.ndarray:
    """Each example's predicted probability of class 1 from ``probe`` fitted to the weak labels of
    the other folds only (:func:`fold_ids`)."""
    y = _weak(weak_labels_N)
    return np.asarray(probe.cross_predict(X_NxD, y, fold_ids(y.size, n_folds, key=key)), dtype=np.float64)


def relabel(probe, X_NxD, weak_labels_N, *, key: jax.Array | None = None, n_folds: int | None = 5,
            fraction: float = 1.0) -> np.ndarray:
    """Weak labels repaired by the probe's out-of-fold predictions.

    With ``fraction = 1`` every label is replaced by its prediction; with ``fraction < 1`` only the
    ``round(fraction * N)`` labels furthest from their prediction (``|weak - predicted|``) are.
    Returns soft labels in [0, 1], shape ``(N,)``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    y = _weak(weak_labels_N)
    predicted = out_of_fold(probe, X_NxD, y, key=key, n_folds=n_folds)
    n = int(round(fraction * y.size))
    worst = np.argsort(-np.abs(y - predicted), kind="stable")[:n]
    repaired = y.copy()
    repaired[worst] = predicted[worst]
    return repaired


def filter_by_probe(probe, X_NxD, weak_labels_N, *, contamination: float = 0.1, key: jax.Array | None = None,
                    n_folds: int | None = 5) -> np.ndarray:
    """Indices (ascending) of the examples kept after dropping the ``round(contamination * N)``
    whose weak label disagrees most with the probe's out-of-fold prediction."""
    if not 0.0 <= contamination < 1.0:
        raise ValueError(f"contamination must be in [0, 1), got {contamination}")
    y = _weak(weak_labels_N)
    predicted = out_of_fold(probe, X_NxD, y, key=key, n_folds=n_folds)
    n_drop = int(round(contamination * y.size))
    order = np.argsort(-np.abs(y - predicted), kind="stable")
    return np.sort(order[n_drop:])
