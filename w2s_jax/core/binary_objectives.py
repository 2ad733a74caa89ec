"""Binary-classification objectives for weak-to-strong training, as pure functions of arrays.

The student's logits are ``z_Nx2`` (class 1 = "positive"), its probabilities ``q = softmax(z)``,
and the weak supervisor's soft labels ``y_Nx2`` (rows on the simplex). Every loss is a masked mean
over examples of a per-example term; ``mask_N`` (0/1) drops padding rows. The losses follow the
two public weak-to-strong codebases, whose definitions they restate as equations:

* Burns et al. 2023, "Weak-to-Strong Generalization" (arXiv:2312.09390), and its code
  ``openai/weak-to-strong`` (``weak_to_strong/loss.py``: ``xent_loss``, ``logconf_loss_fn``,
  ``product_loss_fn``);
* EleutherAI's ``w2s`` (``w2s/loss.py``: ``cross_entropy_loss``, ``log_confidence_loss`` with an
  optional buffer of recent predictions, ``kl_divergence_loss``, ``confidence_window_loss``).

Equations (``H(t, q) = -sum_c t_c log q_c``, ``sg`` = stop-gradient):

* soft cross-entropy (B.1): ``L = mean_i H(y_i, q_i)``;
* auxiliary confidence (B.2): ``L = mean_i H(sg[(1 - w) y_i + w h_i], q_i)``, with ``h_i`` the
  one-hot hardened prediction ``[m_i <= tau, m_i > tau]`` of the margin ``m_i = z_i1 - z_i0``
  and ``tau`` the ``(1 - r)``-quantile of reference margins, ``r`` the weak labels' positive rate
  (B.3), so the hardened predictions are positive at rate ``r``;
* warm-up of the weight (B.4): ``w(s) = w_max * min(1, s / (f S))``, continuous in the step ``s``;
* product (B.5): ``L = mean_i H(sg[t_i], q_i)``, ``t_i ∝ y_i^alpha q_i^beta``;
* entropy-regularised (B.6): ``L = mean_i [(1 - w) H(y_i, q_i) + w H(q_i)]``;
* window (B.7): ``L = mean_i 1[|q_i1 - 1/2| < rho] H(y_i, q_i)``.

KL is ``w2s_jax.core.objectives.kl_to_probs``. Imports jax and numpy only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "aux_confidence_loss",
    "aux_confidence_targets",
    "entropy_regularised_loss",
    "harden",
    "margin",
    "masked_quantile",
    "midweak_radius",
    "positive_rate",
    "product_loss",
    "push_recent",
    "rate_threshold",
    "soft_cross_entropy",
    "warmup_weight",
    "window_loss",
]


def _check_binary(name: str, x: jax.Array) -> None:
    if x.ndim != 2 or x.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {x.shape}")


def _check_pair(logits_Nx2: jax.Array, probs_Nx2: jax.Array, mask_N: jax.Array | None) -> None:
    _check_binary("logits_Nx2", logits_Nx2)
    if probs_Nx2.shape != logits_Nx2.shape:
        raise ValueError(f"probs_Nx2 has shape {probs_Nx2.shape} but logits_Nx2 has shape "
                         f"{logits_Nx2.shape}; they must match")
    if mask_N is not None and mask_N.shape != logits_Nx2.shape[:1]:
        raise ValueError(f"mask_N has shape {mask_N.shape}, expected {logits_Nx2.shape[:1]}")


def _mask(mask_N: jax.Array | None, n: int) -> jax.Array:
    return jnp.ones((n,), bool) if mask_N is None else mask_N.astype(bool)


def _masked_mean(terms_N: jax.Array, mask_N: jax.Array) -> jax.Array:
    # `where`, not a product: a padding row's term may be NaN (e.g. a target built from zero labels)
    total = jnp.sum(jnp.where(mask_N, terms_N, 0.0))
    return total / jnp.maximum(jnp.sum(mask_N.astype(terms_N.dtype)), 1.0)


def _cross_entropy_N(logits_Nx2: jax.Array, targets_Nx2: jax.Array) -> jax.Array:
    """Per-example ``H(t, softmax(z))``; classes with ``t_c = 0`` (or a NaN ``t_c``, from a padding
    row's all-zero label) contribute 0, in value and gradient."""
    log_q = jax.nn.log_softmax(logits_Nx2, axis=-1)
    return -jnp.sum(jnp.where(targets_Nx2 > 0, targets_Nx2, 0.0) * log_q, axis=-1)


def margin(logits_Nx2: jax.Array) -> jax.Array:
    """The student's log-odds of the positive class, ``m = z_1 - z_0`` (N,).

    Thresholds are taken on margins rather than on probabilities: the two order examples alike,
    but a float32 probability saturates at 1 and ties confident examples the margin still orders.
    """
    _check_binary("logits_Nx2", logits_Nx2)
    return logits_Nx2[:, 1] - logits_Nx2[:, 0]


def soft_cross_entropy(logits_Nx2: jax.Array, probs_Nx2: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """Cross-entropy to soft weak labels (B.1): ``mean_i H(y_i, softmax(z_i))``.

    Burns et al.'s ``xent_loss`` and EleutherAI's ``cross_entropy_loss`` on soft labels.

    Arguments:
      logits_Nx2: student logits.
      probs_Nx2: weak soft labels, rows on the simplex.
      mask_N: optional 0/1 weights (padding rows 0).
    Returns:
      the scalar mean over the masked examples.
    """
    _check_pair(logits_Nx2, probs_Nx2, mask_N)
    return _masked_mean(_cross_entropy_N(logits_Nx2, probs_Nx2), _mask(mask_N, logits_Nx2.shape[0]))


def positive_rate(probs_Nx2: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """The weak labels' positive rate ``r = mean_i y_i1`` over the masked examples."""
    _check_binary("probs_Nx2", probs_Nx2)
    return _masked_mean(probs_Nx2[:, 1], _mask(mask_N, probs_Nx2.shape[0]))


def masked_quantile(x_N: jax.Array, q: jax.Array | float, mask_N: jax.Array | None = None) -> jax.Array:
    """The ``q``-quantile of the masked entries of ``x_N``, linearly interpolated.

    The default rule of ``numpy.quantile`` and ``torch.quantile``: with the ``n`` masked values
    sorted, ``x_(k)`` for ``k = q (n - 1)``, interpolating between neighbours. Fixed shapes, so it
    runs under ``jit`` with a traced mask and ``q``. Zero masked entries give 0.
    """
    mask_N = _mask(mask_N, x_N.shape[0])
    n = jnp.sum(mask_N.astype(jnp.int32))
    sorted_N = jnp.sort(jnp.where(mask_N, x_N, jnp.inf))  # masked values first, in order
    position = jnp.clip(jnp.asarray(q, x_N.dtype), 0.0, 1.0) * jnp.maximum(n - 1, 0).astype(x_N.dtype)
    lo = jnp.floor(position).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
    x_lo, x_hi = sorted_N[lo], sorted_N[hi]
    value = x_lo + (position - lo.astype(x_N.dtype)) * (x_hi - x_lo)
    return jnp.where(n > 0, value, jnp.zeros((), x_N.dtype))


def rate_threshold(margins_N: jax.Array, rate: jax.Array | float, mask_N: jax.Array | None = None) -> jax.Array:
    """The threshold ``tau`` of (B.3): the ``(1 - rate)``-quantile of the masked margins.

    With ``n`` distinct margins and ``rate = k / n``, exactly ``k`` of them exceed ``tau``: the
    hardened predictions ``m > tau`` are positive at the weak labels' rate. This is Burns et al.'s
    ``quantile(q_0, r)`` (``logconf_loss_fn``) restated on the positive class's margin, except at
    ``rate = 1``: there the quantile is the smallest margin, which ``m > tau`` (like the
    reference's strict ``<``) would leave negative, so ``tau = -inf`` (every prediction positive).
    """
    rate = jnp.asarray(rate, margins_N.dtype)
    return jnp.where(rate >= 1.0, -jnp.inf, masked_quantile(margins_N, 1.0 - rate, mask_N))


def harden(margins_N: jax.Array, threshold: jax.Array) -> jax.Array:
    """One-hot hardened predictions ``h_N x 2 = [m <= tau, m > tau]`` (float)."""
    positive_N = (margins_N > threshold).astype(margins_N.dtype)
    return jnp.stack([1.0 - positive_N, positive_N], axis=-1)


def warmup_weight(step: jax.Array | float, *, total_steps: int, warmup_frac: float, max_weight: float) -> jax.Array:
    """The auxiliary weight (B.4): ``w(s) = max_weight * min(1, s / (warmup_frac * total_steps))``.

    Rises linearly from 0 at step 0 to ``max_weight`` at ``warmup_frac`` of training and stays
    there: continuous and monotone in ``s``. (``openai/weak-to-strong``'s ``logconf_loss_fn``
    ramps its coefficient to ``warmup_frac`` and then jumps to 1; EleutherAI's ramp is
    continuous, as this one.) ``warmup_frac = 0`` gives ``max_weight`` from the first step.

    Arguments:
      step: the optimizer step being taken (0-based; may be traced, any float or int dtype).
      total_steps: the run's number of optimizer steps.
      warmup_frac: fraction of ``total_steps`` over which the weight ramps, in [0, 1].
      max_weight: the weight after the warm-up, in [0, 1].
    """
    step = jnp.asarray(step, jnp.result_type(float))
    ramp_steps = warmup_frac * total_steps
    if ramp_steps <= 0:
        return jnp.full(step.shape, max_weight, step.dtype)
    return max_weight * jnp.clip(step / ramp_steps, 0.0, 1.0)


def aux_confidence_targets(probs_Nx2: jax.Array, hardened_Nx2: jax.Array, weight: jax.Array | float) -> jax.Array:
    """The auxiliary-confidence target ``(1 - w) y + w h`` of (B.2), under stop-gradient."""
    return jax.lax.stop_gradient((1.0 - weight) * probs_Nx2 + weight * hardened_Nx2)


def aux_confidence_loss(logits_Nx2: jax.Array, probs_Nx2: jax.Array, *, weight: jax.Array | float,
                        threshold: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """Burns et al.'s auxiliary confidence loss (B.2), given the weight and the threshold.

    ``mean_i H(sg[(1 - w) y_i + w h_i], q_i)`` with ``h_i`` the student's prediction hardened at
    ``threshold`` (`rate_threshold` of the batch's or recent margins, computed by the caller). The
    hardened prediction is a target: no gradient flows through it, only through ``q_i``. At
    ``w = 0`` it is `soft_cross_entropy`.

    Arguments:
      logits_Nx2, probs_Nx2, mask_N: as in `soft_cross_entropy`.
      weight: ``w`` in [0, 1] (e.g. `warmup_weight` of the step).
      threshold: ``tau``, on the margin scale (`margin`).
    """
    _check_pair(logits_Nx2, probs_Nx2, mask_N)
    hardened_Nx2 = harden(jax.lax.stop_gradient(margin(logits_Nx2)), jax.lax.stop_gradient(threshold))
    targets_Nx2 = aux_confidence_targets(probs_Nx2, hardened_Nx2, weight)
    return _masked_mean(_cross_entropy_N(logits_Nx2, targets_Nx2), _mask(mask_N, logits_Nx2.shape[0]))


def product_loss(logits_Nx2: jax.Array, probs_Nx2: jax.Array, *, alpha: float = 1.0, beta: float = 1.0,
                 mask_N: jax.Array | None = None) -> jax.Array:
    """The product loss (B.5) of ``openai/weak-to-strong`` (``product_loss_fn``).

    Cross-entropy to ``t ∝ y^alpha q^beta``: the weak label and the student's own prediction
    multiplied as independent experts and renormalised, under stop-gradient. Computed in log
    space, so a class the weak label gives probability 0 gets target 0 (for ``alpha > 0``).

    Arguments:
      alpha: exponent on the weak label (how much the weak supervisor counts).
      beta: exponent on the student's prediction; ``beta = 0`` is `soft_cross_entropy` (for
        ``alpha = 1``).
    """
    _check_pair(logits_Nx2, probs_Nx2, mask_N)
    log_q = jax.nn.log_softmax(logits_Nx2, axis=-1)
    if alpha == 0:
        log_y = jnp.zeros_like(probs_Nx2)
    else:
        positive = probs_Nx2 > 0
        log_y = jnp.where(positive, alpha * jnp.log(jnp.where(positive, probs_Nx2, 1.0)), -jnp.inf)
    targets_Nx2 = jax.lax.stop_gradient(jax.nn.softmax(log_y + beta * log_q, axis=-1))
    return _masked_mean(_cross_entropy_N(logits_Nx2, targets_Nx2), _mask(mask_N, logits_Nx2.shape[0]))


def entropy_regularised_loss(logits_Nx2: jax.Array, probs_Nx2: jax.Array, *, weight: jax.Array | float,
                             mask_N: jax.Array | None = None) -> jax.Array:
    """Cross-entropy to the weak labels plus the student's own entropy (B.6).

    ``mean_i [(1 - w) H(y_i, q_i) + w H(q_i)]``: minimum-entropy regularisation (Grandvalet and
    Bengio 2005), the soft counterpart of (B.2), whose hardened-target term ``w H(h_i, q_i)``
    becomes ``w H(q_i, q_i)`` with the gradient kept. EleutherAI's ``entropy`` loss
    (``log_confidence_loss(harden=False)``) detaches ``q`` in that target; its gradient is then
    ``(1 - w)(q - y)``, a rescaled cross-entropy. Here the gradient flows through both ``q``'s
    of the entropy term, which pushes the student towards confident predictions.
    """
    _check_pair(logits_Nx2, probs_Nx2, mask_N)
    log_q = jax.nn.log_softmax(logits_Nx2, axis=-1)
    entropy_N = -jnp.sum(jnp.exp(log_q) * log_q, axis=-1)
    terms_N = (1.0 - weight) * _cross_entropy_N(logits_Nx2, probs_Nx2) + weight * entropy_N
    return _masked_mean(terms_N, _mask(mask_N, logits_Nx2.shape[0]))


def window_loss(logits_Nx2: jax.Array, probs_Nx2: jax.Array, *, radius: float,
                mask_N: jax.Array | None = None) -> jax.Array:
    """Cross-entropy only where the student is uncertain (B.7; EleutherAI's ``confidence_window_loss``).

    ``mean_i 1[max_c q_ic < 1/2 + rho] H(y_i, q_i)``: the mean runs over ALL masked examples, so
    the confident ones count as zeros (as in the reference, which divides by the batch size). The
    window is a data-dependent selection, not a target: it carries no gradient.
    """
    _check_pair(logits_Nx2, probs_Nx2, mask_N)
    q_Nx2 = jax.nn.softmax(jax.lax.stop_gradient(logits_Nx2), axis=-1)
    uncertain_N = jnp.max(q_Nx2, axis=-1) < 0.5 + radius
    terms_N = jnp.where(uncertain_N, _cross_entropy_N(logits_Nx2, probs_Nx2), 0.0)
    return _masked_mean(terms_N, _mask(mask_N, logits_Nx2.shape[0]))


def midweak_radius(weak_probs_N: np.ndarray) -> float:
    """EleutherAI's ``"midweak"`` window radius: the median weak-label confidence ``|y - 1/2|``.

    With it, the window of (B.7) starts by admitting about as many examples as the weak labels are
    unconfident about. ``weak_probs_N`` are the positive-class probabilities of the training set.
    """
    weak_probs_N = np.asarray(weak_probs_N, np.float64)
    if weak_probs_N.ndim != 1 or weak_probs_N.size == 0:
        raise ValueError(f"weak_probs_N must be a non-empty vector, got shape {weak_probs_N.shape}")
    return float(np.median(np.abs(weak_probs_N - 0.5)))


def push_recent(buffer_K: jax.Array, values_N: jax.Array, mask_N: jax.Array | None = None) -> jax.Array:
    """The ``K`` most recent values after appending the masked ``values_N`` to ``buffer_K``.

    ``buffer_K`` holds values oldest first, NaN in slots not yet filled (NaN-filled at the start).
    Fixed shapes, so it runs under ``jit``; the state of EleutherAI's prediction buffer
    (``log_confidence_loss(buffer=...)``: ``buffer += preds; buffer = buffer[-size:]``).
    """
    if buffer_K.ndim != 1 or values_N.ndim != 1:
        raise ValueError(f"buffer_K and values_N must be vectors, got {buffer_K.shape} and {values_N.shape}")
    mask_N = _mask(mask_N, values_N.shape[0])
    both = jnp.concatenate([buffer_K, jnp.where(mask_N, values_N.astype(buffer_K.dtype), jnp.nan)])
    filled = ~jnp.isnan(both)
    # a stable sort on "filled" puts the empty slots first and keeps each group in arrival order
    order = jnp.argsort(filled.astype(jnp.int32), stable=True)
    return both[order][-buffer_K.shape[0]:]
