"""The binary weak-to-strong objectives against hand computations in numpy (float64), their limits,
their gradients, the threshold rule and the warm-up's continuity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s_jax.core.binary_objectives import (
    aux_confidence_loss,
    entropy_regularised_loss,
    margin,
    masked_quantile,
    midweak_radius,
    positive_rate,
    product_loss,
    push_recent,
    rate_threshold,
    soft_cross_entropy,
    warmup_weight,
    window_loss,
)
from w2s_jax.core.objectives import cross_entropy_to_probs

# Five examples, the last a padding row whose label is all zeros (as a padded batch row has).
Z = np.array([[0.2, -0.4], [1.5, 0.3], [-0.7, 0.9], [0.0, 2.2], [3.0, -1.0]])
Y1 = np.array([0.8, 0.3, 0.6, 0.9, 0.0])
Y = np.stack([1 - Y1, Y1], axis=-1)
Y[4] = 0.0
MASK = np.array([True, True, True, True, False])


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_ce_rows(z, t):
    log_q = np.log(_np_softmax(z))
    return -(t * log_q).sum(-1)


def _mean(rows, mask=MASK):
    return rows[mask].mean()


def test_soft_cross_entropy_hand_value_and_the_existing_objective():
    q = _np_softmax(Z)
    expected = np.mean([-(Y[i, 0] * np.log(q[i, 0]) + Y[i, 1] * np.log(q[i, 1])) for i in range(4)])
    got = soft_cross_entropy(jnp.asarray(Z), jnp.asarray(Y), jnp.asarray(MASK))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(got, cross_entropy_to_probs(jnp.asarray(Z), jnp.asarray(Y), jnp.asarray(MASK)),
                               rtol=1e-12)


def test_masked_quantile_is_numpys_linear_rule():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 20):
        x = rng.normal(size=n + 3)
        mask = np.zeros(n + 3, bool)
        mask[rng.choice(n + 3, n, replace=False)] = True
        for q in (0.0, 0.13, 0.5, 0.77, 1.0):
            np.testing.assert_allclose(masked_quantile(jnp.asarray(x), q, jnp.asarray(mask)),
                                       np.quantile(x[mask], q), rtol=1e-12)


@pytest.mark.parametrize("n", [5, 8, 20])
def test_threshold_gives_the_weak_labels_positive_rate(n):
    rng = np.random.default_rng(n)
    margins = rng.normal(size=n + 2)
    mask = np.ones(n + 2, bool)
    mask[[1, n]] = False  # padding rows, ignored
    margins[~mask] = 100.0  # would be hardened positive if they counted
    for k in range(n + 1):
        tau = rate_threshold(jnp.asarray(margins), k / n, jnp.asarray(mask))
        assert int(np.sum(margins[mask] > float(tau))) == k, (k, float(tau))


def test_positive_rate_and_margin():
    np.testing.assert_allclose(positive_rate(jnp.asarray(Y), jnp.asarray(MASK)), (0.8 + 0.3 + 0.6 + 0.9) / 4)
    np.testing.assert_allclose(margin(jnp.asarray(Z)), Z[:, 1] - Z[:, 0])


def test_aux_confidence_hand_value():
    # margins (z1 - z0): -0.6, -1.2, 1.6, 2.2; weak positive rate 0.65 -> tau is the 0.35-quantile
    # of the sorted margins (-1.2, -0.6, 1.6, 2.2), at position 0.35 * 3 = 1.05:
    # -0.6 + 0.05 * (1.6 + 0.6) = -0.49, so the hardened predictions are [0, 0, 1, 1].
    hardened = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0]], float)
    w = 0.3
    target = (1 - w) * Y + w * hardened
    expected = _mean(_np_ce_rows(Z, target))
    tau = rate_threshold(margin(jnp.asarray(Z)), positive_rate(jnp.asarray(Y), jnp.asarray(MASK)), jnp.asarray(MASK))
    np.testing.assert_allclose(tau, -0.49, rtol=1e-12)
    got = aux_confidence_loss(jnp.asarray(Z), jnp.asarray(Y), weight=w, threshold=tau, mask_N=jnp.asarray(MASK))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("threshold", [-5.0, 0.0, 5.0])
def test_aux_confidence_at_weight_zero_is_soft_cross_entropy(threshold):
    got = aux_confidence_loss(jnp.asarray(Z), jnp.asarray(Y), weight=0.0, threshold=jnp.asarray(threshold),
                              mask_N=jnp.asarray(MASK))
    np.testing.assert_allclose(got, _mean(_np_ce_rows(Z, Y)), rtol=1e-12)


def test_aux_confidence_at_weight_one_fits_the_hardened_predictions():
    got = aux_confidence_loss(jnp.asarray(Z), jnp.asarray(Y), weight=1.0, threshold=jnp.asarray(0.0),
                              mask_N=jnp.asarray(MASK))
    hard = (Z[:, 1] - Z[:, 0] > 0).astype(float)
    np.testing.assert_allclose(got, _mean(_np_ce_rows(Z, np.stack([1 - hard, hard], -1))), rtol=1e-12)


def _grad(loss, z=Z):
    return np.asarray(jax.grad(loss)(jnp.asarray(z)))


def test_aux_confidence_gradient_treats_the_hardened_prediction_as_a_target():
    w, tau = 0.4, -0.49
    g = _grad(lambda z: aux_confidence_loss(z, jnp.asarray(Y), weight=w, threshold=jnp.asarray(tau),
                                            mask_N=jnp.asarray(MASK)))
    hard = (Z[:, 1] - Z[:, 0] > tau).astype(float)
    target = (1 - w) * Y + w * np.stack([1 - hard, hard], -1)
    expected = (_np_softmax(Z) - target) / 4  # d/dz H(t, softmax z) = q - t, t constant
    expected[~MASK] = 0.0
    np.testing.assert_allclose(g, expected, atol=1e-12)


def test_product_loss_hand_value_gradient_and_limits():
    a, b = 1.5, 0.7
    q = _np_softmax(Z)
    with np.errstate(divide="ignore"):
        t = Y**a * q**b
    t = t / np.maximum(t.sum(-1, keepdims=True), 1e-300)
    expected = _mean(_np_ce_rows(Z, t))
    loss = lambda z: product_loss(z, jnp.asarray(Y), alpha=a, beta=b, mask_N=jnp.asarray(MASK))  # noqa: E731
    np.testing.assert_allclose(loss(jnp.asarray(Z)), expected, rtol=1e-12)
    assert np.isfinite(loss(jnp.asarray(Z)))  # the all-zero padding row must not leak a NaN
    g = _grad(loss)
    want = (q - t) / 4  # the product target is a stop-gradient target
    want[~MASK] = 0.0
    np.testing.assert_allclose(g, want, atol=1e-12)
    # beta = 0, alpha = 1: plain cross-entropy to the weak labels
    np.testing.assert_allclose(product_loss(jnp.asarray(Z), jnp.asarray(Y), alpha=1.0, beta=0.0,
                                            mask_N=jnp.asarray(MASK)), _mean(_np_ce_rows(Z, Y)), rtol=1e-12)


def test_product_loss_with_a_hard_label_targets_that_label():
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    z = np.array([[2.0, -1.0], [0.5, 0.5]])
    got = product_loss(jnp.asarray(z), jnp.asarray(y), alpha=1.0, beta=2.0)
    np.testing.assert_allclose(got, _np_ce_rows(z, y).mean(), rtol=1e-12)


def test_entropy_regularised_hand_value_gradient_and_limit():
    w = 0.25
    q = _np_softmax(Z)
    H = -(q * np.log(q)).sum(-1)
    expected = _mean((1 - w) * _np_ce_rows(Z, Y) + w * H)
    loss = lambda z: entropy_regularised_loss(z, jnp.asarray(Y), weight=w, mask_N=jnp.asarray(MASK))  # noqa: E731
    np.testing.assert_allclose(loss(jnp.asarray(Z)), expected, rtol=1e-12)
    # d/dz_k H(q) = -q_k (log q_k + H): the entropy term's gradient is kept
    want = ((1 - w) * (q - Y) - w * q * (np.log(q) + H[:, None])) / 4
    want[~MASK] = 0.0
    np.testing.assert_allclose(_grad(loss), want, atol=1e-12)
    np.testing.assert_allclose(entropy_regularised_loss(jnp.asarray(Z), jnp.asarray(Y), weight=0.0,
                                                        mask_N=jnp.asarray(MASK)), _mean(_np_ce_rows(Z, Y)), rtol=1e-12)


def test_window_loss_hand_value_gradient_and_limit():
    radius = 0.2
    q = _np_softmax(Z)
    inside = q.max(-1) < 0.5 + radius  # q_max: 0.646, 0.769, 0.832, 0.900 -> only row 0
    assert inside[:4].tolist() == [True, False, False, False]
    expected = np.sum(np.where(inside, _np_ce_rows(Z, Y), 0.0)[MASK]) / 4  # mean over ALL scored rows
    loss = lambda z: window_loss(z, jnp.asarray(Y), radius=radius, mask_N=jnp.asarray(MASK))  # noqa: E731
    np.testing.assert_allclose(loss(jnp.asarray(Z)), expected, rtol=1e-12)
    want = np.where((inside & MASK)[:, None], (q - Y) / 4, 0.0)
    np.testing.assert_allclose(_grad(loss), want, atol=1e-12)
    # a window as wide as the simplex is the plain cross-entropy
    np.testing.assert_allclose(window_loss(jnp.asarray(Z), jnp.asarray(Y), radius=0.5, mask_N=jnp.asarray(MASK)),
                               _mean(_np_ce_rows(Z, Y)), rtol=1e-12)


def test_midweak_radius_is_the_median_label_confidence():
    assert midweak_radius(np.array([0.9, 0.4, 0.5, 0.2])) == pytest.approx(np.median([0.4, 0.1, 0.0, 0.3]))
    with pytest.raises(ValueError, match="non-empty vector"):
        midweak_radius(np.array([]))


def _jumps(weights):
    return np.abs(np.diff(weights))


def test_warmup_is_continuous_monotone_and_reaches_the_maximum():
    total, frac, w_max = 50, 0.2, 0.75
    s = np.linspace(0, total, 100_001)  # steps on a fine grid, through the end of the warm-up (10)
    w = np.asarray(warmup_weight(jnp.asarray(s), total_steps=total, warmup_frac=frac, max_weight=w_max))
    assert w[0] == 0.0 and w[-1] == w_max
    assert np.all(np.diff(w) >= 0)  # monotone
    slope = w_max / (frac * total)  # Lipschitz: no step of the grid moves the weight by more
    assert _jumps(w).max() <= slope * (s[1] - s[0]) * (1 + 1e-9)
    end = frac * total
    at = lambda x: float(warmup_weight(x, total_steps=total, warmup_frac=frac, max_weight=w_max))  # noqa: E731
    assert abs(at(end + 1e-9) - at(end - 1e-9)) < 1e-9 and at(end) == pytest.approx(w_max)
    # integer steps as the trainer feeds them: increments of exactly w_max / (frac * total), then 0
    w_int = np.asarray(warmup_weight(jnp.arange(total), total_steps=total, warmup_frac=frac, max_weight=w_max))
    np.testing.assert_allclose(np.diff(w_int)[:10], slope, rtol=1e-12)
    np.testing.assert_allclose(np.diff(w_int)[10:], 0.0, atol=0)


def test_the_continuity_check_catches_a_ramp_that_jumps():
    # openai/weak-to-strong's rule: coef = 1 if step_frac > warmup_frac else step_frac
    total, frac, w_max = 50, 0.2, 0.75
    s = np.linspace(0, total, 100_001)
    step_frac = s / total
    jumping = w_max * np.where(step_frac > frac, 1.0, step_frac)
    assert _jumps(jumping).max() > 0.5  # a jump of w_max * (1 - frac) = 0.6 at warmup_frac


def test_warmup_without_a_ramp_is_the_maximum_at_once():
    np.testing.assert_array_equal(warmup_weight(jnp.arange(3), total_steps=10, warmup_frac=0.0, max_weight=0.5),
                                  [0.5, 0.5, 0.5])


def test_push_recent_keeps_the_last_values_in_order():
    rng = np.random.default_rng(1)
    K = 6
    buffer, reference = jnp.full((K,), jnp.nan), []
    for _ in range(5):
        values = rng.normal(size=4)
        mask = rng.random(4) < 0.7
        buffer = push_recent(buffer, jnp.asarray(values), jnp.asarray(mask))
        reference = (reference + values[mask].tolist())[-K:]  # list semantics: append, keep the tail
        got = np.asarray(buffer)
        filled = got[~np.isnan(got)]
        np.testing.assert_allclose(filled, reference, rtol=0)
        assert np.all(np.isnan(got[: K - len(reference)]))


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"logits_Nx2 must have shape \(N, 2\), got \(4, 3\)"):
        soft_cross_entropy(jnp.zeros((4, 3)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="probs_Nx2 has shape"):
        soft_cross_entropy(jnp.zeros((4, 2)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="mask_N has shape"):
        window_loss(jnp.zeros((4, 2)), jnp.zeros((4, 2)), radius=0.1, mask_N=jnp.ones((5,), bool))
