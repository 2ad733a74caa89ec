"""Every attention path against the plain reference (`models/attention.py`), for every family.

The reference itself is checked against a numpy loop over heads and queries (float64). Then one
`layers.Attention` of each family runs each of its paths: without a cache (XLA:CPU's grouped
batched matmuls, and the fused `jax.nn.dot_product_attention` the accelerators run), a decode
step over a cache, a prefill chunk over a cache read in 64-slot blocks, and a fresh prefill; the
reference is that layer's projections written as einsums around `reference_attention`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.lm.hf_fixtures import FAMILIES
from w2s_jax.models import ModelConfig
from w2s_jax.models.attention import fused_attention, reference_attention
from w2s_jax.models.backend import CPU, GPU, use_backend
from w2s_jax.models.kv_cache import LayerCache
from w2s_jax.models.layers import Attention
from w2s_jax.models.rope import apply_rope, rope_cos_sin
from w2s_jax.models.transformer import attention_mask


def _numpy_attention(q, k, v, mask, scale, cap):
    B, T, N, H = q.shape
    K = k.shape[2]
    out = np.zeros((B, T, N, H))
    for b in range(B):
        for n in range(N):
            kv = n // (N // K)
            for t in range(T):
                s = scale * k[b, :, kv] @ q[b, t, n]
                s = s if cap is None else cap * np.tanh(s / cap)
                s = np.where(mask[b, t], s, -np.inf)
                p = np.exp(s - s.max())
                out[b, t, n] = (p / p.sum()) @ v[b, :, kv]
    return out


@pytest.mark.parametrize("cap", [None, 5.0])
def test_reference_attention_is_the_definition(cap):
    rng = np.random.default_rng(0)
    B, T, S, N, K, H = 2, 3, 5, 4, 2, 8
    q, k, v = rng.normal(size=(B, T, N, H)), rng.normal(size=(B, S, K, H)), rng.normal(size=(B, S, K, H))
    mask = rng.random((B, T, S)) < 0.7
    mask[..., 0] = True  # every query sees a key
    expected = _numpy_attention(q, k, v, mask, 0.3, cap)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    got = reference_attention(f32(q), f32(k), f32(v), jnp.asarray(mask), scale=0.3, softcap=cap)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    if cap is None:
        fused = fused_attention(f32(q), f32(k), f32(v), jnp.asarray(mask), scale=0.3)
        np.testing.assert_allclose(fused, expected, atol=1e-4)


def _layer(family):
    config = ModelConfig.tiny(family)
    attn = Attention(config, rngs=nnx.Rngs(1))
    # O(1) scores and outputs (the init's 0.02 would make every path agree to the tolerance),
    # non-zero biases and norm weights, so that a path dropping or misplacing one fails
    for i, (_, variable) in enumerate(nnx.iter_graph(attn)):
        if isinstance(variable, nnx.Param):
            shape = variable.get_value().shape
            variable.set_value(jax.random.normal(jax.random.key(i), shape) * (0.2 if len(shape) == 3 else 0.3))
    return config, attn


def _reference_layer(config, attn, x_BxTxD, positions_BxT, mask_BxTxS):
    """The layer by the book: einsum projections, q/k norm, RoPE, `reference_attention`, output."""
    def project(name, axes):
        y = jnp.einsum(f"BTD,{axes}->BT{axes[1:]}", x_BxTxD, getattr(attn, f"{name}_proj")[...])
        return y + getattr(attn, f"{name}_bias")[...] if config.qkv_bias else y

    q, k, v = project("q", "DNH"), project("k", "DKH"), project("v", "DKH")
    if config.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    cos, sin = rope_cos_sin(positions_BxT, config, jnp.float32)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    out = reference_attention(q, k, v, mask_BxTxS, scale=config.attn_scale, softcap=config.attn_logit_softcap)
    return jnp.einsum("BTNH,NHD->BTD", out, attn.o_proj[...]), (k, v)


def _inputs(config, T, *, pad=2):
    x = jax.random.normal(jax.random.key(3), (2, T, config.hidden_size))
    valid = jnp.ones((2, T), bool).at[1, :pad].set(False)  # row 1 left-padded
    positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)
    window = config.sliding_window
    return x, valid, positions, attention_mask(valid, jnp.arange(T), window)


def _call(attn, config, x, positions, mask, **kw):
    cos, sin = rope_cos_sin(positions, config, jnp.float32)
    return attn(x, cos_BxTxH=cos, sin_BxTxH=sin, mask_BxTxS=mask, **kw)


@pytest.mark.parametrize("backend", [CPU, GPU], ids=["grouped", "fused"])
@pytest.mark.parametrize("family", FAMILIES)
def test_uncached_attention_matches_the_reference(family, backend):
    config, attn = _layer(family)
    x, valid, positions, mask = _inputs(config, 9)
    expected, _ = _reference_layer(config, attn, x, positions, mask)
    with use_backend(backend):
        got, _ = _call(attn, config, x, positions, mask)
        last, _ = _call(attn, config, x, positions, mask, last_only=True)
    rows = np.asarray(valid)  # padding rows attend to nothing: their outputs are read by nothing
    np.testing.assert_allclose(np.asarray(got)[rows], np.asarray(expected)[rows], atol=1e-4)
    np.testing.assert_allclose(last[:, 0], expected[:, -1], atol=1e-4)


def _cache(config, k_BxSxKxH, v_BxSxKxH, S):
    """A one-layer stacked cache of S slots holding the given keys and values in its first slots."""
    P = k_BxSxKxH.shape[1]
    K, H = config.num_kv_heads, config.head_dim
    keys = jnp.zeros((1, 2, K, H, S)).at[0, ..., :P].set(k_BxSxKxH.transpose(0, 2, 3, 1))
    values = jnp.zeros((1, 2, K, S, H)).at[0, :, :, :P].set(v_BxSxKxH.transpose(0, 2, 1, 3))
    return LayerCache(keys=keys, values=values, layer=jnp.asarray(0))


@pytest.mark.parametrize("backend,new,S", [(CPU, 1, 96), (GPU, 1, 96), (CPU, 6, 128), (GPU, 6, 128)],
                         ids=["decode-cpu", "decode-gpu", "blocks-cpu", "cached-chunk-gpu"])
@pytest.mark.parametrize("family", FAMILIES)
def test_cached_attention_matches_the_reference(family, backend, new, S):
    """`new` tokens after 70 cached ones (S % 64 == 0 with 6 new: the CPU reads the cache in
    blocks under its online softmax); outputs and the new keys and values as the reference's."""
    config, attn = _layer(family)
    T = 70 + new
    x, valid, positions, mask = _inputs(config, T)
    expected, (k, v) = _reference_layer(config, attn, x, positions, mask)
    cache = _cache(config, k[:, :70], v[:, :70], S)
    cache_mask = attention_mask(jnp.pad(valid, ((0, 0), (0, S - T))), 70 + jnp.arange(new), config.sliding_window)
    with use_backend(backend):
        got, (k_new, v_new) = _call(attn, config, x[:, 70:], positions[:, 70:], cache_mask, kv_cache=cache,
                                    index=jnp.asarray(70))
    np.testing.assert_allclose(got, expected[:, 70:], atol=1e-4)
    np.testing.assert_allclose(k_new, k[:, 70:].transpose(0, 2, 3, 1), atol=1e-4)
    np.testing.assert_allclose(v_new, v[:, 70:].transpose(0, 2, 1, 3), atol=1e-4)


@pytest.mark.parametrize("backend", [CPU, GPU], ids=["grouped", "fused"])
@pytest.mark.parametrize("family", FAMILIES)
def test_fresh_prefill_matches_the_reference(family, backend):
    config, attn = _layer(family)
    x, valid, positions, mask = _inputs(config, 9)
    expected, (k, v) = _reference_layer(config, attn, x, positions, mask)
    cache = _cache(config, k[:, :0], v[:, :0], 16)
    with use_backend(backend):
        got, (k_new, v_new) = _call(attn, config, x, positions, mask, kv_cache=cache, index=jnp.asarray(0),
                                    fresh=True)
    rows = np.asarray(valid)
    np.testing.assert_allclose(np.asarray(got)[rows], np.asarray(expected)[rows], atol=1e-4)
    np.testing.assert_allclose(k_new, k.transpose(0, 2, 3, 1), atol=1e-4)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_splash_attention_matches_the_reference(padding):
    """The TPU's splash kernel, run in Pallas's interpreter on this host: equal to the reference
    (causal, keys masked by validity, grouped heads) at every valid query, in bfloat16."""
    from w2s_jax.models.attention import SPLASH_BLOCK, splash_attention

    B, T, N, K, H = 2, SPLASH_BLOCK, 4, 2, 8
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(B, T, n, H)), jnp.bfloat16) for n in (N, K, K))
    pad_B = np.array([0, 37])
    slot_T = np.arange(T)
    valid_BxT = (slot_T[None] >= pad_B[:, None]) if padding == "left" else (slot_T[None] < T - pad_B[:, None])
    mask_BxTxS = attention_mask(jnp.asarray(valid_BxT), jnp.arange(T), None)
    got = splash_attention(q, k, v, jnp.asarray(valid_BxT), scale=H ** -0.5, interpret=True)
    want = reference_attention(q, k, v, mask_BxTxS, scale=H ** -0.5)
    err = np.abs(np.asarray(got, np.float32) - np.asarray(want, np.float32))[valid_BxT]
    assert err.max() < 2 ** -6, err.max()  # bf16 outputs of O(1) values (scale applied to q first)


def test_splash_is_what_the_fused_path_lowers_for_tpu_where_it_applies():
    """Lowered for "tpu" from this host: bf16 causal attention over a multiple of the block runs
    the Mosaic kernel (a `tpu_custom_call`); a shorter length, float32, or a mask that is not
    causal-by-validity (a sliding window) runs XLA's attention."""
    from w2s_jax.models.attention import SPLASH_BLOCK

    def text(T, dtype, causal=True):
        q = jnp.ones((2, T, 4, 8), dtype)
        kv = jnp.ones((2, T, 2, 8), dtype)
        mask = attention_mask(jnp.ones((2, T), bool), jnp.arange(T), None)
        fn = lambda q, k, v: fused_attention(q, k, v, mask, scale=0.3, implementation="splash",  # noqa: E731
                                             causal=causal)
        return jax.jit(fn).trace(q, kv, kv).lower(lowering_platforms=("tpu",)).as_text()

    assert "tpu_custom_call" in text(SPLASH_BLOCK, jnp.bfloat16)
    assert "tpu_custom_call" not in text(SPLASH_BLOCK // 2, jnp.bfloat16)
    assert "tpu_custom_call" not in text(SPLASH_BLOCK, jnp.float32)
    assert "tpu_custom_call" not in text(SPLASH_BLOCK, jnp.bfloat16, causal=False)
