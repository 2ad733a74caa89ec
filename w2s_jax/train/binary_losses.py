"""Weak-to-strong classification objectives as strategies: `loss(logits_BxTxC, batch) -> scalar`.

A classifier is a language model with a 2-token vocabulary: its logits are `B x T x 2` and the
batch carries the weak soft label at the scored position of each row (`teacher_probs_BxTxC`,
`teacher_mask_BxT`: one position per row, the last for a left-padded classification batch) and the
optimizer step being taken (`step_B`, added by the trainer). Each loss reads one `(logits, label)`
pair per row and reduces by a mean over the scored rows, so `num_scored` weights micro-batches
correctly. The equations and their sources are in `w2s_jax.core.binary_objectives`.

State across steps: `AuxConfidence(threshold=RollingBuffer(K))` thresholds over the margins of the
student's K most recent predictions, which outlive a step. Such a loss is a `StatefulLoss`: its
state (one float32 array) lives in the optimizer as a `LossState` variable (`step.py`), so the
jitted train step carries it as part of the donated optimizer state, gradient-accumulation
micro-batches pass it along in order, and checkpoints save and restore it with the optimizer: a
resumed run sees the same buffer as an uninterrupted one. The optimizer is chosen as its home
because it already is the run's donated, sharded and checkpointed state: `train`, `TrainStep` and
`Checkpointer` keep their signatures. Evaluation calls the loss without state (an empty buffer:
the evaluated batch's own margins).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from w2s_jax.core.binary_objectives import (
    aux_confidence_loss,
    entropy_regularised_loss,
    margin,
    positive_rate,
    product_loss,
    push_recent,
    rate_threshold,
    soft_cross_entropy,
    warmup_weight,
    window_loss,
)
from w2s_jax.core.objectives import kl_to_probs


@runtime_checkable
class StatefulLoss(Protocol):
    """A loss with state carried from one step (or micro-batch) to the next.

    `init_state()` is the state before the first step: one float32 array, or None for none.
    `with_state(logits_BxTxC, batch, state)` returns `(loss, new state)`; the new state must not
    depend on the parameters through a gradient path (compute it from stop-gradient values).
    `__call__(logits_BxTxC, batch)` is the loss from `init_state()` (used for evaluation).
    """

    def init_state(self) -> jax.Array | None: ...

    def with_state(self, logits_BxTxC: jax.Array, batch: dict[str, jax.Array],
                   state: jax.Array | None) -> tuple[jax.Array, jax.Array | None]: ...


def initial_loss_state(loss_fn) -> jax.Array | None:
    """`loss_fn.init_state()` for a `StatefulLoss`, else None."""
    return loss_fn.init_state() if isinstance(loss_fn, StatefulLoss) else None


def scored_pairs(logits_BxTxC: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(logits_Bx2, weak_probs_Bx2, mask_B)`: each row's logits and soft label at its scored position.

    The scored position is the row's (first) True in `teacher_mask_BxT`; a row without one (a
    padding row) has `mask_B` False.
    """
    if logits_BxTxC.shape[-1] != 2:
        raise ValueError(f"binary losses need logits with 2 classes (B x T x 2), got {logits_BxTxC.shape}")
    for key in ("teacher_probs_BxTxC", "teacher_mask_BxT"):
        if key not in batch:
            raise KeyError(f"binary losses read batch[{key!r}], which this batch lacks")
    mask_BxT = batch["teacher_mask_BxT"].astype(bool)
    index_B11 = jnp.argmax(mask_BxT, axis=1)[:, None, None]
    logits_Bx2 = jnp.take_along_axis(logits_BxTxC.astype(jnp.float32), index_B11, axis=1)[:, 0]
    probs_Bx2 = jnp.take_along_axis(batch["teacher_probs_BxTxC"].astype(jnp.float32), index_B11, axis=1)[:, 0]
    return logits_Bx2, probs_Bx2, jnp.any(mask_BxT, axis=1)


def _step(batch: dict[str, jax.Array], owner: str) -> jax.Array:
    if "step_B" not in batch:
        raise KeyError(f"{owner} reads the step being taken from batch['step_B'] (the trainer adds it); "
                       "this batch lacks it")
    return jnp.max(batch["step_B"])  # the same in every row


def _check_warmup(owner: str, total_steps, warmup_frac: float, max_weight: float) -> None:
    if not 0.0 <= warmup_frac <= 1.0:
        raise ValueError(f"{owner}.warmup_frac must be in [0, 1], got {warmup_frac!r}")
    if not 0.0 <= max_weight <= 1.0:
        raise ValueError(f"{owner}.max_weight must be in [0, 1], got {max_weight!r}")
    if total_steps is not None and (not isinstance(total_steps, int) or total_steps < 1):
        raise ValueError(f"{owner}.total_steps must be a positive int or None, got {total_steps!r}")


def _weight(owner: str, step, total_steps, warmup_frac: float, max_weight: float) -> jax.Array:
    if total_steps is None:
        if warmup_frac > 0:
            raise ValueError(f"{owner}.total_steps is unset but warmup_frac={warmup_frac} > 0; set it to "
                             "the run's TrainConfig.total_steps (dataclasses.replace)")
        return jnp.asarray(max_weight, jnp.float32)
    return warmup_weight(step, total_steps=total_steps, warmup_frac=warmup_frac,
                         max_weight=max_weight).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class SoftCrossEntropy:
    """Cross-entropy to the weak soft labels, `mean_i H(y_i, q_i)` (eq. B.1)."""

    def __call__(self, logits_BxTxC: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
        logits_Bx2, probs_Bx2, mask_B = scored_pairs(logits_BxTxC, batch)
        return soft_cross_entropy(logits_Bx2, probs_Bx2, mask_B)


@dataclasses.dataclass(frozen=True)
class KLLoss:
    """`mean_i KL(y_i || q_i)` (EleutherAI's `kl_divergence_loss`): the cross-entropy minus the
    weak labels' entropy, same gradient, 0 when the student matches the labels."""

    def __call__(self, logits_BxTxC: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
        logits_Bx2, probs_Bx2, mask_B = scored_pairs(logits_BxTxC, batch)
        return kl_to_probs(logits_Bx2, probs_Bx2, mask_B.astype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class PerBatch:
    """Threshold the hardened predictions at the batch's own `(1 - r)`-quantile margin (Burns et al.)."""

    def init_state(self) -> None:
        return None

    def threshold(self, margins_B, rate, mask_B, state):
        """`(tau, state)` for this batch (no state)."""
        return rate_threshold(margins_B, rate, mask_B), state


@dataclasses.dataclass(frozen=True)
class RollingBuffer:
    """Threshold at the `(1 - r)`-quantile of the student's `size` most recent margins, this
    batch's included (EleutherAI's prediction buffer): steadier than a small batch's quantile.
    `r` is this batch's weak positive rate, as in the reference."""

    size: int = 32  # margins kept (EleutherAI's default buffer_size)

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"RollingBuffer.size must be a positive int, got {self.size!r}")

    def init_state(self) -> jax.Array:
        return jnp.full((self.size,), jnp.nan, jnp.float32)  # NaN = empty slot

    def threshold(self, margins_B, rate, mask_B, state):
        """`(tau, buffer)`: the buffer after pushing this batch's margins, and its quantile."""
        state = self.init_state() if state is None else state
        buffer_K = push_recent(state, margins_B, mask_B)
        return rate_threshold(buffer_K, rate, ~jnp.isnan(buffer_K)), buffer_K


@dataclasses.dataclass(frozen=True)
class AuxConfidence:
    """Burns et al.'s auxiliary confidence loss (eq. B.2): weak labels mixed with the student's
    hardened predictions, `mean_i H(sg[(1 - w) y_i + w h_i], q_i)`.

    `h_i` hardens the student's prediction at the threshold that makes the hardened positive rate
    equal the weak labels' rate in this batch (`threshold=PerBatch()`) or over recent predictions
    (`RollingBuffer(size)`, a `StatefulLoss`); `w` rises linearly and continuously from 0 to
    `max_weight` over the first `warmup_frac` of `total_steps`, read from `batch["step_B"]` as
    data, so one compiled step serves every step. With gradient accumulation, `PerBatch` thresholds
    each micro-batch on its own and `RollingBuffer` receives the micro-batches in order.
    """

    warmup_frac: float = 0.1  # fraction of training over which w ramps from 0 (openai/weak-to-strong's default)
    max_weight: float = 0.5  # w after the warm-up (the references' default aux_coef)
    threshold: PerBatch | RollingBuffer = PerBatch()  # where the hardening threshold comes from
    total_steps: int | None = None  # the run's optimizer steps; None only with warmup_frac=0

    def __post_init__(self):
        _check_warmup("AuxConfidence", self.total_steps, self.warmup_frac, self.max_weight)
        if not isinstance(self.threshold, (PerBatch, RollingBuffer)):
            raise ValueError(f"AuxConfidence.threshold must be PerBatch() or RollingBuffer(size), "
                             f"got {self.threshold!r}")

    def init_state(self) -> jax.Array | None:
        """The threshold's state before the first step (None for `PerBatch`)."""
        return self.threshold.init_state()

    def with_state(self, logits_BxTxC, batch, state):
        """`(loss, new threshold state)`."""
        logits_Bx2, probs_Bx2, mask_B = scored_pairs(logits_BxTxC, batch)
        weight = _weight("AuxConfidence", _step(batch, "AuxConfidence"), self.total_steps,
                         self.warmup_frac, self.max_weight)
        margins_B = jax.lax.stop_gradient(margin(logits_Bx2))
        tau, state = self.threshold.threshold(margins_B, positive_rate(probs_Bx2, mask_B), mask_B, state)
        loss = aux_confidence_loss(logits_Bx2, probs_Bx2, weight=weight, threshold=tau, mask_N=mask_B)
        return loss, state

    def __call__(self, logits_BxTxC: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
        return self.with_state(logits_BxTxC, batch, self.init_state())[0]


@dataclasses.dataclass(frozen=True)
class ProductLoss:
    """Cross-entropy to `t ∝ y^alpha q^beta` under stop-gradient (eq. B.5; openai/weak-to-strong's
    `product_loss_fn`)."""

    alpha: float = 1.0  # exponent on the weak label
    beta: float = 1.0  # exponent on the student's own prediction

    def __post_init__(self):
        for name in ("alpha", "beta"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"ProductLoss.{name} must be >= 0, got {getattr(self, name)!r}")

    def __call__(self, logits_BxTxC: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
        logits_Bx2, probs_Bx2, mask_B = scored_pairs(logits_BxTxC, batch)
        return product_loss(logits_Bx2, probs_Bx2, alpha=self.alpha, beta=self.beta, mask_N=mask_B)


@dataclasses.dataclass(frozen=True)
class EntropyRegularised:
    """`mean_i [(1 - w) H(y_i, q_i) + w H(q_i)]` (eq. B.6), `w` warmed up as in `AuxConfidence`."""

    warmup_frac: float = 0.1  # fraction of training over which w ramps from 0
    max_weight: float = 0.5  # w after the warm-up
    total_steps: int | None = None  # the run's optimizer steps; None only with warmup_frac=0

    def __post_init__(self):
        _check_warmup("EntropyRegularised", self.total_steps, self.warmup_frac, self.max_weight)

    def __call__(self, logits_BxTxC: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
        logits_Bx2, probs_Bx2, mask_B = scored_pairs(logits_BxTxC, batch)
        weight = _weight("EntropyRegularised", _step(batch, "EntropyRegularised"), self.total_steps,
                         self.warmup_frac, self.max_weight)
        return entropy_regularised_loss(logits_Bx2, probs_Bx2, weight=weight, mask_N=mask_B)


@dataclasses.dataclass(frozen=True)
class WindowLoss:
    """Cross-entropy only on rows where the student is uncertain, `max_c q_c < 1/2 + radius`
    (eq. B.7; EleutherAI's `confidence_window_loss`). `core.binary_objectives.midweak_radius` of the
    training labels gives EleutherAI's "midweak" radius."""

    radius: float = 0.15  # half-width of the window around 1/2 (EleutherAI's default)

    def __post_init__(self):
        if not self.radius > 0:  # >= 0.5 admits every row: plain cross-entropy
            raise ValueError(f"WindowLoss.radius must be > 0, got {self.radius!r}")

    def __call__(self, logits_BxTxC: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
        logits_Bx2, probs_Bx2, mask_B = scored_pairs(logits_BxTxC, batch)
        return window_loss(logits_Bx2, probs_Bx2, radius=self.radius, mask_N=mask_B)


# Registered by name, so an experiment file picks a loss with `BINARY_LOSSES[name](**fields)`.
BINARY_LOSSES: dict[str, type] = {
    "cross_entropy": SoftCrossEntropy,
    "aux_confidence": AuxConfidence,
    "product": ProductLoss,
    "kl": KLLoss,
    "entropy": EntropyRegularised,
    "window": WindowLoss,
}

# Where `AuxConfidence` takes its threshold, by name: `THRESHOLDS[name](**fields)`.
THRESHOLDS: dict[str, type] = {"per_batch": PerBatch, "rolling_buffer": RollingBuffer}


def binary_loss(name: str, *, total_steps: int, **fields):
    """`BINARY_LOSSES[name](**fields)`, with `total_steps` set on the losses that warm up.

    `total_steps` is the run's `TrainConfig.total_steps`; losses without a warm-up ignore it.
    """
    if name not in BINARY_LOSSES:
        raise ValueError(f"unknown binary loss {name!r}; known: {sorted(BINARY_LOSSES)}")
    cls = BINARY_LOSSES[name]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(fields) - names
    if unknown:
        raise ValueError(f"binary loss {name!r} has no field(s) {sorted(unknown)}; its fields: {sorted(names)}")
    if "total_steps" in names:
        fields = {**fields, "total_steps": total_steps}
    return cls(**fields)
