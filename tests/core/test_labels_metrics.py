"""Label sources' moments and the metrics (excess risk with a general Sigma, PGR and its interval)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.core import GoldLabels, WeakLabels, accuracy, excess_risk, mean_and_se, pgr

Z = 4.0


@pytest.mark.parametrize("source_cls", [GoldLabels, WeakLabels])
def test_linear_gaussian_labels_mean_and_variance(source_cls):
    """Residuals y - beta^T x have mean 0 and variance sigma^2 (chi-square se: sigma^2 sqrt(2/N))."""
    N, sigma = 200_000, 0.7
    beta = jnp.asarray([1.0, -2.0, 0.5])
    X = jax.random.normal(jax.random.key(0), (N, 3))
    y = source_cls(beta, jnp.asarray(sigma))(X, key=jax.random.key(1))
    r = np.asarray(y - X @ beta)
    assert abs(r.mean()) <= Z * sigma / np.sqrt(N)
    assert abs(r.var() - sigma**2) <= Z * sigma**2 * np.sqrt(2 / N)
    with pytest.raises(ValueError, match="features"):
        source_cls(beta, jnp.asarray(sigma))(jnp.zeros((4, 2)), key=jax.random.key(0))


def test_excess_risk_general_sigma():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 4))
    Sigma = A @ A.T + np.eye(4)
    b, star = rng.standard_normal((3, 4)), rng.standard_normal(4)
    expected = [(bi - star) @ Sigma @ (bi - star) for bi in b]
    got = excess_risk(jnp.asarray(b), jnp.asarray(star), jnp.asarray(Sigma))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(excess_risk(jnp.asarray(b), jnp.asarray(star))), ((b - star) ** 2).sum(-1))
    with pytest.raises(ValueError, match="features"):
        excess_risk(jnp.zeros(3), jnp.zeros(4))


def test_accuracy_with_mask():
    pred, labels = jnp.asarray([1, 2, 3, 4]), jnp.asarray([1, 0, 3, 0])
    assert float(accuracy(pred, labels)) == 0.5
    assert float(accuracy(pred, labels, jnp.asarray([1, 1, 1, 0]))) == pytest.approx(2 / 3)


def test_pgr_known_value_and_risk_orientation():
    # Scores: weak 0.5, ceiling 0.9, method 0.8 on every trial (plus paired noise) -> PGR = 0.75.
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.01, 50)
    est = pgr(0.8 + noise, 0.5 + noise, 0.9 + noise)
    assert est.value == pytest.approx(0.75, abs=1e-12) and est.reliable
    assert est.se == pytest.approx(0.0, abs=1e-12)  # paired noise cancels exactly
    # Risks (lower is better), weak risk known exactly as a scalar.
    est = pgr([0.2, 0.3], 1.0, [0.0, 0.2], higher_is_better=False)
    assert est.value == pytest.approx((1.0 - 0.25) / (1.0 - 0.1))
    assert est.lo <= est.value <= est.hi


def test_pgr_nan_and_warning_when_gap_not_significant():
    rng = np.random.default_rng(2)
    weak = rng.normal(0.5, 0.1, 30)
    ceiling = weak + rng.normal(0.0, 0.1, 30)  # zero mean gap
    with pytest.warns(RuntimeWarning, match="not significantly"):
        est = pgr(weak + 0.01, weak, ceiling)
    assert np.isnan(est.value) and np.isnan(est.lo) and np.isnan(est.hi) and not est.reliable
    with pytest.raises(ValueError, match="level"):
        pgr([1.0], [0.0], [2.0], level=1.5)


def test_pgr_delta_method_interval_matches_bootstrap_and_covers():
    rng = np.random.default_rng(3)

    def draw(T):
        weak = rng.normal(0.0, 1.0, T)
        ceiling = weak + 1.0 + rng.normal(0.0, 0.5, T)
        method = weak + 0.6 + rng.normal(0.0, 0.5, T)
        return method, weak, ceiling  # true PGR = 0.6

    delta = pgr(*draw(2000))
    boot = pgr(*draw(2000), n_bootstrap=2000, seed=0)
    # Same population; se's agree to within bootstrap noise (~1/sqrt(2B)) plus O(1/T): allow 15%.
    assert boot.se == pytest.approx(delta.se, rel=0.15)
    # Coverage of the 95% delta-method interval over 400 replicates: binomial se 0.011.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hits = [(e.lo <= 0.6 <= e.hi) for e in (pgr(*draw(200)) for _ in range(400))]
    assert abs(np.mean(hits) - 0.95) <= Z * np.sqrt(0.95 * 0.05 / 400)


def test_mean_and_se():
    m, se = mean_and_se([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert np.isnan(mean_and_se([1.0])[1])


def _bootstrap_by_hand(a_T, b_T, n_bootstrap, seed, level):
    """The paired percentile bootstrap written out: resample trials, ratio of means, percentiles."""
    rng = np.random.default_rng(seed)
    T = len(a_T)
    ratios = []
    for _ in range(n_bootstrap):
        i = rng.integers(0, T, size=T)
        ratios.append(a_T[i].mean() / b_T[i].mean())
    tail = 100 * (1 - level) / 2
    return np.percentile(ratios, [tail, 100 - tail]), np.std(ratios, ddof=1)


@pytest.mark.parametrize("level", [0.9, 0.95])
def test_pgr_bootstrap_interval_tails_match_a_hand_percentile(level):
    rng = np.random.default_rng(5)
    T = 60
    weak = rng.normal(0.0, 1.0, T)
    ceiling = weak + 1.0 + rng.normal(0.0, 0.5, T)
    method = weak + 0.6 + rng.normal(0.0, 0.5, T)
    est = pgr(method, weak, ceiling, n_bootstrap=500, seed=3, level=level)
    (lo, hi), se = _bootstrap_by_hand(method - weak, ceiling - weak, 500, 3, level)
    assert est.lo == pytest.approx(lo, rel=1e-12) and est.hi == pytest.approx(hi, rel=1e-12)
    assert est.se == pytest.approx(se, rel=1e-12)
    assert est.lo < est.value < est.hi
    # The interval is not symmetric by construction, but it is close to value +- z se here.
    z = {0.9: 1.6449, 0.95: 1.96}[level]
    assert est.hi - est.lo == pytest.approx(2 * z * se, rel=0.25)


def test_pgr_bootstrap_interval_covers_the_true_value():
    """Coverage of the 90% bootstrap interval over 200 replicates: binomial se 0.021."""
    rng = np.random.default_rng(6)
    hits = []
    for r in range(200):
        weak = rng.normal(0.0, 1.0, 200)
        ceiling = weak + 1.0 + rng.normal(0.0, 0.5, 200)
        method = weak + 0.6 + rng.normal(0.0, 0.5, 200)  # true PGR = 0.6
        est = pgr(method, weak, ceiling, n_bootstrap=300, seed=r, level=0.9)
        hits.append(est.lo <= 0.6 <= est.hi)
    assert abs(np.mean(hits) - 0.9) <= Z * np.sqrt(0.9 * 0.1 / 200)


def test_pgr_delta_interval_is_value_plus_minus_z_se_by_hand():
    """T = 3 by hand: a = (1, 2, 3), b = (2, 2, 2): PGR = 1, s_aa = 1, s_ab = s_bb = 0, se = 1 / (2 sqrt 3)."""
    est = pgr([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0], level=0.95)
    se = 1 / (2 * np.sqrt(3))
    assert est.value == pytest.approx(1.0) and est.se == pytest.approx(se, rel=1e-12)
    assert est.lo == pytest.approx(1 - 1.959963984540054 * se, rel=1e-12)
    assert est.hi == pytest.approx(1 + 1.959963984540054 * se, rel=1e-12)


def test_pgr_delta_method_se_with_correlated_gaps_by_hand():
    """Worked by hand with a non-zero covariance of the two gaps,
    a = (1, 2, 4), b = (1, 3, 2): PGR = (7/3)/2 = 7/6, s_aa = 7/3, s_bb = 1, s_ab = 1/2, so
    se^2 = (7/3 - 2 (7/6)(1/2) + (7/6)^2) / (3 * 2^2) = 91/432 (the cross term's sign matters here)."""
    est = pgr([1.0, 2.0, 4.0], [0.0, 0.0, 0.0], [1.0, 3.0, 2.0])
    assert est.reliable and est.value == pytest.approx(7 / 6, rel=1e-14)
    assert est.se == pytest.approx(np.sqrt(91 / 432), rel=1e-12)
