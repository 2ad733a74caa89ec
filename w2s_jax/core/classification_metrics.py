"""Binary-classification metrics with intervals over items and over seeds.

Every metric is computed from per-item predicted probabilities of class 1 (``probs_N`` in [0, 1])
and labels ``labels_N`` (gold labels are 0/1; a supervisor's soft labels are thresholded at 1/2 where
a hard label is needed):

* accuracy: the fraction of items with ``(p > 1/2) == y``;
* ROC AUC: the Mann-Whitney statistic ``P(s+ > s-) + P(s+ = s-) / 2`` over all positive/negative
  pairs (so a tie counts one half, and constant scores give 1/2);
* expected calibration error (ECE): with ``n_bins`` equal-width bins of [0, 1]
  (``[0, 1/n), ..., [(n-1)/n, 1]``), ``ECE = sum_b (n_b / N) |mean(y in b) - mean(p in b)|``, over the
  probability of class 1 (``over="probability"``) or, as in Guo et al. (2017), over the confidence
  ``max(p, 1 - p)`` against the correctness of the predicted class (``over="confidence"``);
* agreement: the fraction of items on which two predictors' hard labels agree (one minus the
  student's misfit to its supervisor, Burns et al. 2023).

Each metric is a small strategy evaluated under item weights ``w_BxN`` (one row per bootstrap
resample: how many times each item was drawn), so a bootstrap recomputes the whole statistic
(ROC AUC is not a mean over items) on every resample in one vectorised pass. PGR on any of them
(Burns et al. 2023, ``(student - weak) / (ceiling - weak)``) gets a paired bootstrap interval over
items (:func:`pgr_over_items`: the same resampled items for weak, ceiling and student, so item
difficulty shared by the three cancels) and, with several seeds, a seed-level interval
(:func:`pgr_over_seeds`: the seed is the unit that fails together; it reuses
:func:`w2s_jax.core.metrics.pgr` on per-seed values).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Protocol

import numpy as np

from w2s_jax.core.metrics import PGREstimate, bootstrap_mean, pgr

__all__ = [
    "roc_auc",
    "expected_calibration_error",
    "agreement",
    "ItemMetric",
    "Accuracy",
    "RocAuc",
    "CalibrationError",
    "CLASSIFICATION_METRICS",
    "resample_weights",
    "item_interval",
    "seed_interval",
    "pgr_over_items",
    "pgr_over_seeds",
]

_CHUNK_ELEMENTS = 1 << 22  # bootstrap weights are built this many (resample, item) cells at a time


def _as_probs(name: str, probs_N) -> np.ndarray:
    p = np.asarray(probs_N, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"{name} must be one value per item (shape (N,)), got shape {p.shape}")
    if p.size and not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError(f"{name} must be probabilities in [0, 1]; got values in [{np.nanmin(p)}, {np.nanmax(p)}]")
    return p


def _as_binary(name: str, labels_N) -> np.ndarray:
    y = np.asarray(labels_N, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"{name} must be one label per item (shape (N,)), got shape {y.shape}")
    if not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError(f"{name} must be hard 0/1 labels; threshold soft labels first (e.g. labels > 0.5)")
    return y


def _paired(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} have shapes {a.shape} and {b.shape}: pair them by item first")


def _hard(p: np.ndarray) -> np.ndarray:
    return (p > 0.5).astype(np.float64)


def _weights(w, n: int) -> np.ndarray:
    if w is None:
        return np.ones((1, n))
    w = np.asarray(w, dtype=np.float64)
    return w.reshape(1, -1) if w.ndim == 1 else w


class ItemMetric(Protocol):
    """A statistic of per-item predictions under item weights (the strategy the intervals use)."""

    name: str
    higher_is_better: bool

    def weighted(self, probs_N: np.ndarray, labels_N: np.ndarray, w_BxN: np.ndarray) -> np.ndarray:
        """The statistic under each row of weights ``w_BxN`` (counts per item), shape ``(B,)``."""
        ...


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Fraction of items whose hard prediction ``p > 1/2`` equals the (hard) label."""

    name: str = "accuracy"
    higher_is_better: bool = True

    def weighted(self, probs_N, labels_N, w_BxN):
        hits_N = (_hard(probs_N) == _hard(labels_N)).astype(np.float64)
        return (w_BxN @ hits_N) / w_BxN.sum(axis=1)


@dataclasses.dataclass(frozen=True)
class RocAuc:
    """ROC AUC as the Mann-Whitney statistic, ties counted one half; NaN without both classes.

    Weighted form: items sorted by score and grouped by equal score ``g``; with ``P_g``/``Q_g`` the
    weight of positives/negatives in group ``g``, ``AUC = sum_g P_g (Q_{<g} + Q_g / 2) / (P Q)``.
    """

    name: str = "auc"
    higher_is_better: bool = True

    def weighted(self, probs_N, labels_N, w_BxN):
        s, y = np.asarray(probs_N, dtype=np.float64), _hard(labels_N)
        order = np.argsort(s, kind="stable")
        s_sorted, y_sorted, w_sorted = s[order], y[order], w_BxN[:, order]
        # group boundaries: first and last sorted position of each distinct score
        new_group = np.concatenate([[True], s_sorted[1:] != s_sorted[:-1]])
        starts = np.flatnonzero(new_group)
        if starts.size == s.size:  # no ties: a positive's negatives below are the running count
            w_pos = w_sorted * y_sorted
            cum_neg = np.cumsum(w_sorted - w_pos, axis=1)
            total_pos, total_neg = w_pos.sum(axis=1), cum_neg[:, -1]
            with np.errstate(invalid="ignore", divide="ignore"):
                auc = np.sum(w_pos * cum_neg, axis=1) / (total_pos * total_neg)
            return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)
        ends = np.concatenate([starts[1:], [s.size]]) - 1
        cum_pos = np.cumsum(w_sorted * y_sorted, axis=1)
        cum_neg = np.cumsum(w_sorted * (1.0 - y_sorted), axis=1)
        zeros = np.zeros((w_BxN.shape[0], 1))
        below_neg = np.concatenate([zeros, cum_neg], axis=1)[:, starts]  # negatives scored strictly lower
        group_neg = cum_neg[:, ends] - below_neg
        group_pos = cum_pos[:, ends] - np.concatenate([zeros, cum_pos], axis=1)[:, starts]
        total_pos, total_neg = cum_pos[:, -1], cum_neg[:, -1]
        numerator = np.sum(group_pos * (below_neg + 0.5 * group_neg), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = numerator / (total_pos * total_neg)
        return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


@dataclasses.dataclass(frozen=True)
class CalibrationError:
    """Expected calibration error with ``n_bins`` equal-width bins (see the module docstring)."""

    n_bins: int = 10
    over: str = "probability"  # "probability": p against y; "confidence": max(p, 1-p) against correctness
    name: str = "ece"
    higher_is_better: bool = False

    def __post_init__(self):
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be at least 1, got {self.n_bins}")
        if self.over not in ("probability", "confidence"):
            raise ValueError(f"over must be 'probability' or 'confidence', got {self.over!r}")

    def weighted(self, probs_N, labels_N, w_BxN):
        p, y = np.asarray(probs_N, dtype=np.float64), np.asarray(labels_N, dtype=np.float64)
        if self.over == "confidence":
            p, y = np.maximum(p, 1.0 - p), (_hard(p) == _hard(y)).astype(np.float64)
        bin_N = np.minimum((p * self.n_bins).astype(np.int64), self.n_bins - 1)  # p = 1 joins the last bin
        onehot_NxK = np.eye(self.n_bins)[bin_N]
        gap_BxK = w_BxN @ (onehot_NxK * (y - p)[:, None])  # sum over bin of (y - p) = n_b (mean y - mean p)
        return np.abs(gap_BxK).sum(axis=1) / w_BxN.sum(axis=1)


CLASSIFICATION_METRICS: dict[str, ItemMetric] = {
    "accuracy": Accuracy(),
    "auc": RocAuc(),
    "ece": CalibrationError(),
}


def roc_auc(scores_N, labels_N) -> float:
    """ROC AUC of ``scores_N`` (any real scores; higher means class 1) for 0/1 ``labels_N``: the
    Mann-Whitney statistic, ties counted one half. A ValueError when a class is absent."""
    s = np.asarray(scores_N, dtype=np.float64)
    y = _as_binary("labels_N", labels_N)
    _paired(s, y, "scores_N and labels_N")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores_N must be finite")
    if y.min(initial=1.0) == y.max(initial=0.0):
        raise ValueError(f"ROC AUC is undefined: every one of the {y.size} labels is {y[0] if y.size else 'missing'}")
    return float(RocAuc().weighted(s, y, _weights(None, y.size))[0])


def expected_calibration_error(probs_N, labels_N, *, n_bins: int = 10, over: str = "probability") -> float:
    """ECE of ``probs_N`` (probability of class 1) against ``labels_N`` (0/1, or soft in [0, 1] with
    ``over="probability"``), with ``n_bins`` equal-width bins (see the module docstring)."""
    p, y = _as_probs("probs_N", probs_N), _as_probs("labels_N", labels_N)
    _paired(p, y, "probs_N and labels_N")
    if p.size == 0:
        raise ValueError("expected_calibration_error of no items")
    return float(CalibrationError(n_bins=n_bins, over=over).weighted(p, y, _weights(None, p.size))[0])


def agreement(pred_a_N, pred_b_N) -> float:
    """Fraction of items on which two predictors' hard labels (``p > 1/2``) agree; ``1 - agreement``
    is the student's misfit to its supervisor. Inputs are probabilities of class 1 or 0/1 labels."""
    a, b = _as_probs("pred_a_N", pred_a_N), _as_probs("pred_b_N", pred_b_N)
    _paired(a, b, "pred_a_N and pred_b_N")
    if a.size == 0:
        raise ValueError("agreement of no items")
    return float(np.mean(_hard(a) == _hard(b)))


def resample_weights(n_items: int, n_bootstrap: int, *, seed: int = 0) -> np.ndarray:
    """``(n_bootstrap, n_items)`` counts: how often each item is drawn in each resample of
    ``n_items`` items with replacement (each row sums to ``n_items``)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_items, size=(n_bootstrap, n_items))
    offsets = np.arange(n_bootstrap)[:, None] * n_items
    counts = np.bincount((idx + offsets).ravel(), minlength=n_bootstrap * n_items)
    return counts.reshape(n_bootstrap, n_items).astype(np.float64)


def _chunks(n_items: int, n_bootstrap: int):
    per = max(1, _CHUNK_ELEMENTS // max(n_items, 1))
    return [min(per, n_bootstrap - i) for i in range(0, n_bootstrap, per)]


def _check_metric_inputs(metric: ItemMetric, probs_N, labels_N) -> tuple[np.ndarray, np.ndarray]:
    p, y = _as_probs("probs_N", probs_N), _as_probs("labels_N", labels_N)
    _paired(p, y, "probs_N and labels_N")
    if p.size == 0:
        raise ValueError(f"{metric.name} of no items")
    return p, y


def _quantiles(values, level: float) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def _check_level(level: float, n_bootstrap: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be positive, got {n_bootstrap}")


def item_interval(metric: ItemMetric, probs_N, labels_N, *, n_bootstrap: int = 1000, level: float = 0.95,
                  seed: int = 0) -> dict:
    """``{"value", "lo", "hi", "n"}``: ``metric`` on all items and its percentile bootstrap interval
    over items (the statistic recomputed on each resample)."""
    _check_level(level, n_bootstrap)
    p, y = _check_metric_inputs(metric, probs_N, labels_N)
    value = float(metric.weighted(p, y, _weights(None, p.size))[0])
    rng = np.random.default_rng(seed)
    stats = [metric.weighted(p, y, resample_weights(p.size, b, seed=int(rng.integers(2**63))))
             for b in _chunks(p.size, n_bootstrap)]
    lo, hi = _quantiles(np.concatenate(stats), level)
    return {"value": value, "lo": lo, "hi": hi, "n": int(p.size)}


def seed_interval(metric: ItemMetric, probs_SxN, labels_N, *, n_bootstrap: int = 1000, level: float = 0.95,
                  seed: int = 0) -> dict:
    """``{"mean", "lo", "hi", "n"}``: the mean over seeds of ``metric`` on each seed's predictions
    (``probs_SxN``: one row per seed), and its bootstrap interval over seeds
    (:func:`w2s_jax.core.metrics.bootstrap_mean`; NaN interval for one seed). ``labels_N`` is one
    row shared by every seed or one row per seed (then rows may differ in length: a list)."""
    _check_level(level, n_bootstrap)
    per_seed = _per_seed(metric, probs_SxN, labels_N, "probs_SxN")
    return bootstrap_mean(per_seed, n_bootstrap=n_bootstrap, level=level, seed=seed)


def _rows(x, name: str) -> list[np.ndarray]:
    """Per-seed rows: a 1-D array (one row), a 2-D array, or a list of 1-D arrays (seeds may have
    different numbers of items)."""
    if isinstance(x, (list, tuple)) and x and np.ndim(x[0]) == 1:
        return [np.asarray(r, dtype=np.float64) for r in x]
    a = np.asarray(x, dtype=np.float64)
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must be (seeds, items) or one row per seed, got shape {a.shape}")
    return [a] if a.ndim == 1 else list(a)


def _per_seed(metric: ItemMetric, probs_SxN, labels_N, name: str) -> np.ndarray:
    rows = _rows(probs_SxN, name)
    labels = _rows(labels_N, "labels")
    if len(labels) == 1:
        labels = labels * len(rows)
    elif len(labels) != len(rows):
        raise ValueError(f"{name} has {len(rows)} seeds but the labels {len(labels)}: pair them by seed")
    return np.asarray([metric.weighted(*_check_metric_inputs(metric, p, y), np.ones((1, p.size)))[0]
                       for p, y in zip(rows, labels)])


def _unreliable(gap: float, gap_se: float, level: float) -> PGREstimate:
    warnings.warn(f"PGR undefined: the weak-to-ceiling gap {gap:.4g} (se {gap_se:.2g}) is not significantly "
                  f"positive at level {level}; reporting NaN", RuntimeWarning, stacklevel=3)
    nan = math.nan
    return PGREstimate(nan, nan, nan, nan, gap, gap_se, False, level)


def pgr_over_items(metric: ItemMetric, student_N, weak_N, ceiling_N, labels_N, *, n_bootstrap: int = 1000,
                   level: float = 0.95, seed: int = 0, paired: bool = True) -> PGREstimate:
    """PGR of ``metric`` with a bootstrap interval over items.

    ``PGR = (m(student) - m(weak)) / (m(ceiling) - m(weak))`` with ``m`` the metric on all items
    (negated when lower is better). Paired (default): each resample draws one set of items and
    recomputes the metric of all three predictors on it; ``paired=False`` resamples each predictor's
    items independently (what ignoring the pairing would give: wider when item difficulty is shared).

    Returns:
      A :class:`~w2s_jax.core.metrics.PGREstimate`: ``value`` the point estimate, ``lo``/``hi`` the
      percentile interval, ``se`` the bootstrap standard deviation, ``gap``/``gap_se`` the
      weak-to-ceiling gap and its bootstrap standard deviation. When the gap's lower quantile is not
      above zero the estimate is NaN with a ``RuntimeWarning`` (a ratio over a gap that may be zero).
    """
    _check_level(level, n_bootstrap)
    arms = [_check_metric_inputs(metric, a, labels_N) for a in (student_N, weak_N, ceiling_N)]
    y, n = arms[0][1], arms[0][0].size
    sign = 1.0 if metric.higher_is_better else -1.0
    s, w, c = (sign * float(metric.weighted(p, y, _weights(None, n))[0]) for p, _ in arms)
    rng = np.random.default_rng(seed)
    boot = []  # rows: (student, weak, ceiling) per resample
    for b in _chunks(n, n_bootstrap):
        seeds = rng.integers(2**63, size=1 if paired else 3)
        W = [resample_weights(n, b, seed=int(k)) for k in seeds]
        boot.append(np.stack([sign * metric.weighted(p, y, W[i % len(W)]) for i, (p, _) in enumerate(arms)], axis=1))
    B = np.concatenate(boot)
    gap_B = B[:, 2] - B[:, 1]
    gap, gap_se = c - w, float(np.nanstd(gap_B, ddof=1))
    gap_lo, _ = _quantiles(gap_B, level)
    if not (gap > 0.0 and gap_lo > 0.0):
        return _unreliable(gap, gap_se, level)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_B = (B[:, 0] - B[:, 1]) / gap_B
    lo, hi = _quantiles(ratio_B, level)
    finite = ratio_B[np.isfinite(ratio_B)]
    se = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return PGREstimate((s - w) / gap, lo, hi, se, gap, gap_se, True, level)


def pgr_over_seeds(metric: ItemMetric, student_SxN, weak_SxN, ceiling_SxN, labels_N, *, level: float = 0.95,
                   n_bootstrap: int = 0, seed: int = 0) -> PGREstimate:
    """PGR of ``metric`` with an interval over seeds: the metric of each seed's student, weak model
    and ceiling (rows of ``*_SxN``, paired by seed; a single row, e.g. one weak model shared by every
    seed, broadcasts), then :func:`w2s_jax.core.metrics.pgr` on the per-seed values (delta method,
    or a paired bootstrap over seeds with ``n_bootstrap > 0``). ``labels_N``: one row shared by
    every seed, or one row per seed (seeds with their own test items; a list when their numbers
    differ). Needs at least two seeds."""
    values = [_per_seed(metric, a, labels_N, name) for a, name in
              ((student_SxN, "student_SxN"), (weak_SxN, "weak_SxN"), (ceiling_SxN, "ceiling_SxN"))]
    seeds = max(v.size for v in values)
    if seeds < 2:
        raise ValueError("pgr_over_seeds needs at least two seeds; use pgr_over_items for one")
    for v, name in zip(values, ("student_SxN", "weak_SxN", "ceiling_SxN")):
        if v.size not in (1, seeds):
            raise ValueError(f"{name} has {v.size} seeds, the others {seeds}: pair them by seed (or give one row)")
    # core.metrics.pgr warns and returns NaN when the gap over seeds is not significantly positive
    return pgr(*values, higher_is_better=metric.higher_is_better, level=level, n_bootstrap=n_bootstrap, seed=seed)
