"""ROC AUC, calibration error, agreement and PGR with intervals, against direct computations.

References written here, independent of the vectorised code: AUC by counting every
positive/negative pair (ties one half), ECE by an explicit loop over bins, a resample's statistic by
materialising the resampled items, and scikit-learn's ``roc_auc_score`` where installed.
"""

import math
import warnings

import numpy as np
import pytest

from w2s_jax.core import (
    CLASSIFICATION_METRICS,
    Accuracy,
    CalibrationError,
    RocAuc,
    agreement,
    expected_calibration_error,
    item_interval,
    pgr,
    pgr_over_items,
    pgr_over_seeds,
    roc_auc,
    seed_interval,
)
from w2s_jax.core.classification_metrics import resample_weights
from w2s_jax.core.metrics import bootstrap_mean


def pairs_auc(scores, labels):
    """AUC by counting all positive/negative pairs, a tie counting one half."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def binned_ece(probs, labels, n_bins):
    """ECE with an explicit loop over the bins [k/n, (k+1)/n) (the last one closed)."""
    probs, labels = np.asarray(probs, float), np.asarray(labels, float)
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inside = (probs >= lo) & ((probs < hi) if k < n_bins - 1 else (probs <= hi))
        if inside.any():
            total += inside.sum() / probs.size * abs(labels[inside].mean() - probs[inside].mean())
    return total


def scored(rng, n, separation, decimals=None):
    labels = rng.integers(0, 2, n)
    scores = 1 / (1 + np.exp(-(separation * (2 * labels - 1) + rng.normal(size=n))))
    return (np.round(scores, decimals) if decimals is not None else scores), labels


@pytest.mark.parametrize("decimals", [None, 1, 0])  # no ties, many ties, almost all tied
def test_roc_auc_counts_pairs_with_ties_as_half(decimals):
    rng = np.random.default_rng(decimals or 7)
    scores, labels = scored(rng, 150, 0.7, decimals)
    assert roc_auc(scores, labels) == pytest.approx(pairs_auc(scores, labels), abs=1e-12)


def test_roc_auc_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for decimals in (None, 2):
        scores, labels = scored(rng, 2000, 0.5, decimals)
        assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_limits_and_errors():
    labels = np.array([0, 0, 1, 1, 0, 1])
    assert roc_auc(labels + 0.1 * np.arange(6), labels) == 1.0  # perfect separation
    assert roc_auc(-(labels + 0.1 * np.arange(6)), labels) == 0.0  # reversed
    assert roc_auc(np.full(6, 0.3), labels) == 0.5  # constant scores: every pair a tie
    assert roc_auc([5.0, -3.0], [1, 0]) == 1.0  # any real scores, not only probabilities
    with pytest.raises(ValueError, match="undefined"):
        roc_auc([0.1, 0.9], [1, 1])
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0.1, 0.9], [0.2, 1])
    with pytest.raises(ValueError, match="pair them"):
        roc_auc([0.1, 0.9, 0.3], [0, 1])


@pytest.mark.parametrize("decimals", [None, 1])  # distinct scores (AUC's fast path) and ties
def test_weighted_metrics_equal_the_metric_on_the_resampled_items(decimals):
    """The bootstrap's weighted statistic equals the statistic on the items drawn, materialised."""
    rng = np.random.default_rng(2)
    scores, labels = scored(rng, 80, 0.6, decimals=decimals)
    W = resample_weights(80, 5, seed=3)
    assert np.all(W.sum(axis=1) == 80)
    for row, w in enumerate(W):
        s, y = np.repeat(scores, w.astype(int)), np.repeat(labels, w.astype(int))
        assert RocAuc().weighted(scores, labels, W)[row] == pytest.approx(pairs_auc(s, y), abs=1e-12)
        ece = CalibrationError(n_bins=7).weighted(scores, labels, W)[row]
        assert ece == pytest.approx(binned_ece(s, y, 7), abs=1e-12)
        assert Accuracy().weighted(scores, labels, W)[row] == pytest.approx(np.mean((s > 0.5) == y), abs=1e-12)


@pytest.mark.parametrize("n_bins", [1, 5, 10, 15])
def test_ece_matches_explicit_bins(n_bins):
    rng = np.random.default_rng(n_bins)
    probs, labels = scored(rng, 500, 0.8, decimals=2)  # rounding puts items on bin edges, including 0 and 1
    probs[:3] = [0.0, 1.0, 0.5]
    assert expected_calibration_error(probs, labels, n_bins=n_bins) == pytest.approx(binned_ece(probs, labels, n_bins),
                                                                                      abs=1e-12)
    confidence, correct = np.maximum(probs, 1 - probs), ((probs > 0.5) == labels)
    assert expected_calibration_error(probs, labels, n_bins=n_bins, over="confidence") == pytest.approx(
        binned_ece(confidence, correct, n_bins), abs=1e-12)
    soft = rng.random(500)  # soft labels: calibration against the label's mean
    assert expected_calibration_error(probs, soft, n_bins=n_bins) == pytest.approx(binned_ece(probs, soft, n_bins),
                                                                                   abs=1e-12)


def test_ece_of_calibrated_probabilities_is_monte_carlo_small():
    """y ~ Bernoulli(p): in bin b, mean(y - p) ~ N(0, s_b^2) with s_b^2 <= 1/4 / n_b, n_b ~ N / K, so
    ECE = sum_b (n_b / N) |mean_b| has mean <= sqrt(2/pi) s and sd <= sqrt(1 - 2/pi) s / sqrt(K),
    s = sqrt(K / (4N)); five sd above the mean bounds it. A 0.1 miscalibration must exceed that."""
    N, K = 20_000, 10
    s = math.sqrt(K / (4 * N))
    tolerance = math.sqrt(2 / math.pi) * s + 5 * math.sqrt(1 - 2 / math.pi) * s / math.sqrt(K)
    rng = np.random.default_rng(3)
    for trial in range(3):
        p = rng.random(N)
        y = (rng.random(N) < p).astype(float)
        assert expected_calibration_error(p, y, n_bins=K) <= tolerance
        assert expected_calibration_error(np.clip(p + 0.1, 0, 1), y, n_bins=K) > 0.05 > tolerance


def test_ece_and_agreement_reject_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0.2, 1.2], [0, 1])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0.2], [0], n_bins=0)
    with pytest.raises(ValueError, match="over"):
        CalibrationError(over="top")
    with pytest.raises(ValueError, match="pair them"):
        agreement([0.2, 0.7], [1])


def test_agreement_thresholds_at_one_half():
    # hard labels 1, 0, 1, 0, 1 against 1, 1, 0, 0, 1: agree on items 0, 3, 4
    assert agreement([0.9, 0.2, 0.51, 0.5, 1.0], [1, 1, 0, 0, 0.8]) == pytest.approx(3 / 5)
    assert agreement([0, 1], [0, 1]) == 1.0


def test_item_interval_of_accuracy_is_the_binomial_interval():
    """The percentile bootstrap of an accuracy approaches p +- z sqrt(p (1 - p) / N)."""
    rng = np.random.default_rng(4)
    N = 4000
    labels = rng.integers(0, 2, N)
    probs = np.where(rng.random(N) < 0.8, labels, 1 - labels).astype(float)
    out = item_interval(Accuracy(), probs, labels, n_bootstrap=4000, level=0.95, seed=0)
    p = np.mean((probs > 0.5) == labels)
    half = 1.959964 * math.sqrt(p * (1 - p) / N)
    assert out["value"] == pytest.approx(p) and out["n"] == N
    assert out["lo"] == pytest.approx(p - half, abs=0.15 * half)
    assert out["hi"] == pytest.approx(p + half, abs=0.15 * half)
    again = item_interval(Accuracy(), probs, labels, n_bootstrap=4000, level=0.95, seed=0)
    assert again == out  # seeded


def three_predictors(n=1000, seed=5):
    """Nested correctness: the weak model is right on 50% of items, the student on 80% (a superset),
    the ceiling on 90% (a superset of that): accuracy PGR = (0.8 - 0.5) / (0.9 - 0.5) = 0.75."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    rank = rng.permutation(n)  # item difficulty: rank < n * q are the items a predictor of accuracy q gets right
    right = lambda q: np.where(rank < q * n, labels, 1 - labels).astype(float)  # noqa: E731
    return labels, right(0.8), right(0.5), right(0.9)


def test_pgr_over_items_hand_computed_and_paired_narrower_than_unpaired():
    labels, student, weak, ceiling = three_predictors()
    paired = pgr_over_items(Accuracy(), student, weak, ceiling, labels, n_bootstrap=2000, seed=0)
    unpaired = pgr_over_items(Accuracy(), student, weak, ceiling, labels, n_bootstrap=2000, seed=0, paired=False)
    for est in (paired, unpaired):
        assert est.value == pytest.approx(0.75, abs=1e-12) and est.reliable
        assert est.gap == pytest.approx(0.4, abs=1e-12)
        assert est.lo <= est.value <= est.hi
    # shared item difficulty cancels only when the three are resampled together
    assert (paired.hi - paired.lo) < 0.6 * (unpaired.hi - unpaired.lo)
    # the gap's standard error: per item, ceiling - weak is 1 on 40% of items (paired: variance 0.4 * 0.6);
    # unpaired the two accuracies vary independently (0.9 * 0.1 + 0.5 * 0.5); bootstrap error ~ 1/sqrt(2B)
    assert paired.gap_se == pytest.approx(math.sqrt(0.4 * 0.6 / 1000), rel=0.1)
    assert unpaired.gap_se == pytest.approx(math.sqrt((0.9 * 0.1 + 0.5 * 0.5) / 1000), rel=0.1)


def test_pgr_over_items_on_auc_recomputes_auc_per_resample():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 400)
    signal = 2 * labels - 1
    noise = rng.normal(size=400)
    weak, student, ceiling = (1 / (1 + np.exp(-(a * signal + noise))) for a in (0.3, 1.0, 2.0))
    est = pgr_over_items(RocAuc(), student, weak, ceiling, labels, n_bootstrap=500, seed=1)
    a_s, a_w, a_c = (pairs_auc(p, labels) for p in (student, weak, ceiling))
    expected = (a_s - a_w) / (a_c - a_w)
    assert est.value == pytest.approx(expected, abs=1e-12)
    assert est.lo <= est.value <= est.hi and est.hi - est.lo > 0.01
    # the same interval as a direct paired bootstrap: AUC of each materialised resample
    W = resample_weights(400, 50, seed=9)
    direct = []
    for w in W.astype(int):
        a = [pairs_auc(np.repeat(p, w), np.repeat(labels, w)) for p in (student, weak, ceiling)]
        direct.append((a[0] - a[1]) / (a[2] - a[1]))
    vectorised = [(RocAuc().weighted(student, labels, W) - RocAuc().weighted(weak, labels, W))
                  / (RocAuc().weighted(ceiling, labels, W) - RocAuc().weighted(weak, labels, W))]
    np.testing.assert_allclose(vectorised[0], direct, atol=1e-10)


def test_pgr_on_a_lower_is_better_metric_and_an_undefined_gap():
    rng = np.random.default_rng(8)
    p = rng.random(3000)
    labels = (rng.random(3000) < p).astype(float)
    ceiling, weak, student = p, np.clip(p + 0.3, 0, 1), np.clip(p + 0.1, 0, 1)
    ece = CalibrationError()
    est = pgr_over_items(ece, student, weak, ceiling, labels, n_bootstrap=300)
    e = [expected_calibration_error(x, labels) for x in (student, weak, ceiling)]
    assert est.value == pytest.approx((e[1] - e[0]) / (e[1] - e[2]), abs=1e-12)  # lower is better: signs flip
    with pytest.warns(RuntimeWarning, match="not significantly positive"):
        same = pgr_over_items(Accuracy(), student, weak, weak, labels, n_bootstrap=200)
    assert math.isnan(same.value) and not same.reliable


def test_pgr_over_seeds_is_core_pgr_on_per_seed_values():
    labels, student, weak, ceiling = three_predictors(n=500)
    rng = np.random.default_rng(9)
    students = np.stack([student, weak, rng.permutation(student)])  # three seeds, different students
    per_seed = [np.mean((s > 0.5) == labels) for s in students]
    est = pgr_over_seeds(Accuracy(), students, weak, np.stack([ceiling] * 3), labels)  # one weak row broadcasts
    ref = pgr(per_seed, 0.5, 0.9)
    assert est == ref
    assert est.value == pytest.approx((np.mean(per_seed) - 0.5) / 0.4)
    with pytest.raises(ValueError, match="two seeds"):
        pgr_over_seeds(Accuracy(), student, weak, ceiling, labels)
    # seeds with their own test items (different counts): each seed's metric on its own labels
    own = [labels[:400], labels[100:]]
    rows = lambda p: [p[:400], p[100:]]  # noqa: E731
    est = pgr_over_seeds(Accuracy(), rows(student), rows(weak), rows(ceiling), own)
    per = [[np.mean((p[i] > 0.5) == own[i]) for i in range(2)] for p in (rows(student), rows(weak), rows(ceiling))]
    assert est == pgr(*per)
    with pytest.raises(ValueError, match="pair them by seed"):
        pgr_over_seeds(Accuracy(), students, np.stack([weak] * 2), ceiling, labels)


def test_seed_interval_is_the_bootstrap_over_seeds():
    labels, student, weak, ceiling = three_predictors(n=300)
    seeds = np.stack([student, weak, ceiling, student])
    values = [roc_auc(s, labels) for s in seeds]
    out = seed_interval(RocAuc(), seeds, labels, n_bootstrap=500, level=0.9, seed=2)
    assert out == bootstrap_mean(values, n_bootstrap=500, level=0.9, seed=2)
    assert out["lo"] <= out["mean"] <= out["hi"]


def test_registry_names_each_metric():
    assert {name: m.name for name, m in CLASSIFICATION_METRICS.items()} == {
        "accuracy": "accuracy", "auc": "auc", "ece": "ece"}
    assert not CLASSIFICATION_METRICS["ece"].higher_is_better
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        item_interval(CLASSIFICATION_METRICS["auc"], [0.1, 0.9, 0.4], [0, 1, 1], n_bootstrap=50)
