"""Rotary position embeddings (default, linear and Llama-3.1 frequency scaling).

Matches transformers' `modeling_rope_utils`: inverse frequencies in float32,
angles = position * inv_freq in float32, cos/sin cast to the activation dtype, and the
"rotate half" convention (the two halves of a head are the real and imaginary parts).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from w2s_jax.models.config import ModelConfig


def inverse_frequencies(config: ModelConfig) -> np.ndarray:
    """Inverse frequencies inv_freq_{H/2} (float32) for the config's rope type.

    default: theta ** (-2i / H); linear: divided by `factor`; llama3: long wavelengths
    (> original_max / low_freq_factor) divided by `factor`, short ones (< original_max /
    high_freq_factor) kept, smooth interpolation in between.
    """
    H = config.head_dim
    exponent = np.arange(0, H, 2, dtype=np.int64).astype(np.float32) / np.float32(H)
    inv_freq = (1.0 / (np.float32(config.rope_theta) ** exponent)).astype(np.float32)
    if config.rope_type == "linear":
        return (inv_freq / np.float32(config.rope_factor)).astype(np.float32)
    if config.rope_type == "llama3":
        factor = config.rope_factor
        low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
        old_len = config.rope_original_max_positions
        low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        return np.where(is_medium, smoothed, scaled).astype(np.float32)
    return inv_freq


def rope_cos_sin(positions_BxT: jnp.ndarray, config: ModelConfig, dtype) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos and sin tables `B x T x H` for integer positions, cast to `dtype`."""
    inv_freq_Hh = jnp.asarray(inverse_frequencies(config))
    angles_BxTxHh = positions_BxT.astype(jnp.float32)[..., None] * inv_freq_Hh
    # cos/sin on the H/2 distinct angles, then duplicated: the same values as transformers'
    # cos(cat(a, a)), but XLA:CPU no longer fuses the transcendental into every consumer (once per
    # head and use; docs/benchmarks.md).
    cos_BxTxHh, sin_BxTxHh = jnp.cos(angles_BxTxHh), jnp.sin(angles_BxTxHh)
    cos_BxTxH = jnp.concatenate([cos_BxTxHh, cos_BxTxHh], axis=-1)
    sin_BxTxH = jnp.concatenate([sin_BxTxHh, sin_BxTxHh], axis=-1)
    return cos_BxTxH.astype(dtype), sin_BxTxH.astype(dtype)


def apply_rope(x_BxTxNxH: jnp.ndarray, cos_BxTxH: jnp.ndarray, sin_BxTxH: jnp.ndarray) -> jnp.ndarray:
    """x * cos + rotate_half(x) * sin, broadcast over heads."""
    half = x_BxTxNxH.shape[-1] // 2
    x1, x2 = x_BxTxNxH[..., :half], x_BxTxNxH[..., half:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return x_BxTxNxH * cos_BxTxH[:, :, None, :] + rotated * sin_BxTxH[:, :, None, :]
