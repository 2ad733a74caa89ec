"""Next-token sampling strategies: pure functions of ``logits_BxV`` and small frozen strategy objects.

A sampler maps the last-position logits of a batch to one token per row. Randomness is per row:
callers pass ``keys_B`` (one PRNG key per row, normally ``fold_in(fold_in(key, example_index),
step)``) so a row's draw depends only on its own key, never on its batch mates.

Samplers and filters are frozen dataclasses, so they are hashable and can be static arguments of a
jitted decode loop.

    Greedy()                                   argmax
    Temperature(0.7)                           softmax(logits / 0.7)
    Temperature(0.7, filters=(TopK(50), TopP(0.9)))  temperature, then top-k, then top-p (HF order)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


def top_k_filter(logits_BxV: jax.Array, k: int) -> jax.Array:
    """Keeps each row's ``k`` largest logits and sets the rest to ``-inf``.

    Ties with the k-th largest value are kept, so a row may keep more than ``k`` entries.

    Arguments:
      logits_BxV: unnormalised log-probabilities.
      k: number of entries to keep, ``1 <= k``; ``k >= V`` keeps everything.
    Returns:
      ``logits_BxV`` with filtered entries at ``-inf``.
    """
    vocab_size = logits_BxV.shape[-1]
    if k >= vocab_size:
        return logits_BxV
    kth_largest_Bx1 = jax.lax.top_k(logits_BxV, k)[0][:, -1:]
    return jnp.where(logits_BxV >= kth_largest_Bx1, logits_BxV, _NEG_INF)


def top_p_filter(logits_BxV: jax.Array, p: float) -> jax.Array:
    """Nucleus filter: keeps each row's smallest set of tokens whose probability mass is >= ``p``.

    Tokens are taken in order of decreasing probability; token ``i`` (in that order) is kept when
    the mass strictly before it is ``< p``, so the most likely token is always kept and the kept set
    is the minimal nucleus (Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration").

    Arguments:
      logits_BxV: unnormalised log-probabilities.
      p: nucleus mass in ``(0, 1]``; ``1`` keeps everything.
    Returns:
      ``logits_BxV`` with entries outside the nucleus at ``-inf``.
    """
    order_BxV = jnp.argsort(-logits_BxV, axis=-1)
    sorted_logits_BxV = jnp.take_along_axis(logits_BxV, order_BxV, axis=-1)
    sorted_probs_BxV = jax.nn.softmax(sorted_logits_BxV.astype(jnp.float32), axis=-1)
    mass_before_BxV = jnp.cumsum(sorted_probs_BxV, axis=-1) - sorted_probs_BxV
    keep_sorted_BxV = mass_before_BxV < p
    keep_sorted_BxV = keep_sorted_BxV.at[:, 0].set(True)
    # Scatter the mask back from sorted order to vocabulary order.
    rows_Bx1 = jnp.arange(logits_BxV.shape[0])[:, None]
    keep_BxV = jnp.zeros_like(keep_sorted_BxV).at[rows_Bx1, order_BxV].set(keep_sorted_BxV)
    return jnp.where(keep_BxV, logits_BxV, _NEG_INF)


@dataclasses.dataclass(frozen=True)
class TopK:
    """Filter keeping the ``k`` most likely tokens (see :func:`top_k_filter`)."""

    k: int  # number of tokens kept per row, >= 1

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"TopK.k must be an integer >= 1, got {self.k!r}")

    def __call__(self, logits_BxV: jax.Array) -> jax.Array:
        return top_k_filter(logits_BxV, self.k)


@dataclasses.dataclass(frozen=True)
class TopP:
    """Filter keeping the minimal nucleus of mass ``p`` (see :func:`top_p_filter`)."""

    p: float  # nucleus probability mass, in (0, 1]

    def __post_init__(self):
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"TopP.p must be in (0, 1], got {self.p!r}")

    def __call__(self, logits_BxV: jax.Array) -> jax.Array:
        return top_p_filter(logits_BxV, self.p)


class Sampler(Protocol):
    """Maps ``logits_BxV`` and one PRNG key per row to ``tokens_B`` (int32)."""

    def __call__(self, logits_BxV: jax.Array, *, keys_B: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class Greedy:
    """Deterministic argmax decoding; ignores the keys."""

    def __call__(self, logits_BxV: jax.Array, *, keys_B: jax.Array) -> jax.Array:
        del keys_B
        return first_argmax(logits_BxV)


def first_argmax(logits_BxV: jax.Array) -> jax.Array:
    """`jnp.argmax(logits_BxV, axis=-1)` as int32 (the first maximum; the first NaN if any), as
    two plain reductions: the row's max, then the least index holding it. XLA:CPU runs argmax's
    paired (value, index) reduction one element at a time (docs/benchmarks.md)."""
    V = logits_BxV.shape[-1]
    peak_Bx1 = jnp.max(logits_BxV, axis=-1, keepdims=True)  # NaN if the row has one
    hit_BxV = (logits_BxV == peak_Bx1) | jnp.isnan(logits_BxV)
    return jnp.min(jnp.where(hit_BxV, jnp.arange(V, dtype=jnp.int32), V), axis=-1)


@dataclasses.dataclass(frozen=True)
class Temperature:
    """Ancestral sampling from ``softmax(logits / temperature)`` after optional filters.

    ``Temperature(0.8, filters=(TopK(k=40), TopP(p=0.95)))`` divides by the temperature, then
    applies the filters in order, then draws one token per row with that row's key.
    """

    temperature: float = 1.0  # softmax temperature, > 0 (use Greedy() for the zero limit)
    filters: tuple = ()  # logit filters applied in order after the temperature, e.g. (TopK(k=50),)

    def __post_init__(self):
        if not 0.0 < self.temperature < math.inf:
            raise ValueError(
                f"Temperature.temperature must be finite and > 0, got {self.temperature!r} "
                "(for the zero limit, argmax decoding, use Greedy())"
            )
        if not isinstance(self.filters, tuple):
            raise ValueError(f"Temperature.filters must be a tuple, got {type(self.filters)}")

    def __call__(self, logits_BxV: jax.Array, *, keys_B: jax.Array) -> jax.Array:
        logits_BxV = logits_BxV.astype(jnp.float32) / self.temperature
        for logit_filter in self.filters:
            logits_BxV = logit_filter(logits_BxV)
        draw = jax.vmap(lambda key, logits_V: jax.random.categorical(key, logits_V))
        return draw(keys_B, logits_BxV).astype(jnp.int32)


def make_sampler(
    *, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None
) -> Sampler:
    """Builds a sampler from the usual knobs: ``temperature == 0`` means greedy.

    Filters with no effect (``top_k`` None or 0, ``top_p`` None or 1) are left out.
    Raises ValueError for a temperature that is negative, infinite or NaN, a negative ``top_k``
    or a ``top_p`` outside (0, 1].
    """
    if not 0.0 <= temperature < math.inf:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 or None: no top-k filter), got {top_k!r}")
    filters = []
    if top_k:
        filters.append(TopK(top_k))
    if top_p is not None and TopP(top_p).p < 1.0:  # TopP validates the value even when unused
        filters.append(TopP(top_p))
    if temperature == 0.0:
        return Greedy()
    return Temperature(temperature, filters=tuple(filters))


def example_keys(key: jax.Array, example_index_B: jax.Array, step: jax.Array | int) -> jax.Array:
    """One key per row: ``fold_in(fold_in(key, example_index), step)``.

    Depends only on the call's key, the example's index in the caller's full prompt list and the
    decode step, so a row's sample is independent of batch size, batch mates and padding.
    """
    per_example = jax.vmap(lambda index: jax.random.fold_in(key, index))(example_index_B)
    return jax.vmap(lambda k: jax.random.fold_in(k, step))(per_example)
