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
* :func:`topo_filter` — the same with a topological first stage (TopoCC, as in EleutherAI's w2s):
  drop what lies outside the largest connected region of its own class in the kNN graph, then the
  examples furthest from their neighbours' mean label.

A probe is any object with ``cross_predict(X_NxD, y_N, folds_N) -> (N,)`` (the probes of
:mod:`w2s_jax.core.probes`).
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["fold_ids", "out_of_fold", "relabel", "filter_by_probe", "connected_components", "topo_filter"]


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


def connected_components(n: int, i_E, j_E) -> np.ndarray:
    """Component id per node of the undirected graph with edges ``(i_E[e], j_E[e])``: the smallest
    node index of its component (min-label propagation with pointer jumping)."""
    i_E, j_E = np.asarray(i_E, np.int64), np.asarray(j_E, np.int64)
    label = np.arange(n)
    while True:
        m = np.minimum(label[i_E], label[j_E])
        new = label.copy()
        np.minimum.at(new, i_E, m)
        np.minimum.at(new, j_E, m)
        new = new[new]  # labels only decrease and name a node of the same component: jump along them
        if np.array_equal(new, label):
            return label
        label = new


def topo_filter(X_NxD, weak_labels_N, *, contamination: float = 0.1, k_cc: int = 20, k_zeta: int = 20,
                metric: str = "euclidean") -> np.ndarray:
    """Indices (ascending) of the examples kept by a two-stage topological filter (TopoCC).

    1. In the graph joining each example to its ``k_cc`` nearest neighbours (made undirected) and
       restricted to edges between examples of the same hard weak label, keep for each label only
       its largest connected component: an island of one label inside the other's region is
       suspect. (EleutherAI's w2s keeps the largest *strongly* connected component of the directed
       graph; the undirected graph keeps a superset of it.)
    2. Among the kept, drop the examples whose weak label is furthest from the mean weak label of
       their ``k_zeta`` nearest kept neighbours (themselves excluded), until ``round(contamination
       N)`` examples are dropped in all (none more if stage 1 already dropped that many).
    """
    from w2s_jax.core.probes import nearest_neighbours  # probes re-exports this module's functions

    if not 0.0 <= contamination < 1.0:
        raise ValueError(f"contamination must be in [0, 1), got {contamination}")
    y = _weak(weak_labels_N)
    n = y.size
    if not 1 <= k_cc < n or not 1 <= k_zeta < n:
        raise ValueError(f"k_cc and k_zeta must be between 1 and {n - 1} (the other examples), got {k_cc}, {k_zeta}")
    hard = y > 0.5
    rows = np.arange(n)
    idx_NxK = nearest_neighbours(X_NxD, X_NxD, k=k_cc, metric=metric, q_fold_M=rows, r_fold_N=rows)
    i_E, j_E = np.repeat(rows, k_cc), idx_NxK.reshape(-1)
    same = hard[i_E] == hard[j_E]
    component = connected_components(n, i_E[same], j_E[same])
    keep = np.zeros(n, bool)
    for cls in (False, True):
        members = component[hard == cls]
        if members.size:
            keep |= component == np.bincount(members).argmax()
    kept = np.flatnonzero(keep)
    n_more = max(int(round(contamination * n)) - (n - kept.size), 0)
    if n_more == 0 or kept.size <= k_zeta:
        return kept
    X_kept = np.asarray(X_NxD)[kept]
    local = np.arange(kept.size)
    near = nearest_neighbours(X_kept, X_kept, k=k_zeta, metric=metric, q_fold_M=local, r_fold_N=local)
    distance = np.abs(y[kept] - y[kept][near].mean(axis=1))
    order = np.argsort(-distance, kind="stable")
    return np.sort(kept[order[n_more:]])
