"""Decoder building blocks: RMSNorm (Llama and Gemma styles), GQA attention, gated MLP.

Every parameter is an `nnx.Param` carrying `logical_axes` metadata (one logical-axis name or
None per dimension). Parameters live in `param_dtype`; computation runs in `dtype`, with casts
placed where transformers places them so float32 runs match the PyTorch reference.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.models import backend
from w2s_jax.models.attention import fused_attention, masked_scores
from w2s_jax.models.cached_attention import attend_cached
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.layer_weights import LayerWeight
from w2s_jax.models.matmul import matmul
from w2s_jax.models.rope import apply_rope

_INIT_STD = 0.02


def init_param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...], param_dtype, *,
               init: str = "normal") -> nnx.Param:
    """A parameter (N(0, 0.02), ones or zeros) tagged with its `logical_axes`."""
    if init == "normal":
        value = _INIT_STD * jax.random.normal(rngs.params(), shape, param_dtype)
    elif init == "ones":
        value = jnp.ones(shape, param_dtype)
    else:
        value = jnp.zeros(shape, param_dtype)
    return nnx.Param(value, logical_axes=axes)


class RMSNorm(nnx.Module):
    """Root-mean-square norm over the last axis.

    llama style: w * (x / rms(x)) with the normalised value cast back to the input dtype first;
    gemma style: ((1 + w) * x / rms(x)) in float32, then cast (weights initialised at 0).
    """

    def __init__(self, dim: int, *, eps: float, style: str, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.eps = eps
        self.style = style
        self.weight = init_param(rngs, (dim,), (None,), param_dtype, init="ones" if style == "llama" else "zeros")

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        w = self.weight[...]
        if self.style == "gemma":
            return (normed * (1.0 + w.astype(jnp.float32))).astype(x.dtype)
        return (w.astype(x.dtype) * normed.astype(x.dtype)).astype(x.dtype)


def dense(x: jnp.ndarray, w: jnp.ndarray, *, contract: int = 1) -> jnp.ndarray:
    """Contract the last `contract` axes of `x` with the first `contract` axes of `w` as ONE 2-D matmul.

    Equal to the einsum (e.g. "BTD,DNH->BTNH", "BTNH,NHD->BTD"), but flattened to (rows, in) @ (in,
    out): XLA:CPU runs the backward pass of rank-3 contractions slower than of 2-D matmuls
    (docs/benchmarks.md). `w` may be a per-layer
    `LayerWeight` (`layer_weights.py`), contracted through its switch.
    """
    lead, inner = x.shape[: x.ndim - contract], x.shape[x.ndim - contract:]
    if w.shape[:contract] != inner:
        raise ValueError(f"dense: x has trailing axes {inner} but w has leading axes {w.shape[:contract]}")
    out = w.shape[contract:]
    x_NxI = x.reshape(-1, int(np.prod(inner)))
    if isinstance(w, LayerWeight):  # one layer of per-layer weights, read in place
        return w.matmul(x_NxI).reshape(*lead, *out)
    y = matmul(x_NxI, w.reshape(int(np.prod(inner)), -1))
    return y.reshape(*lead, *out)


def dense_transposed(x: jnp.ndarray, w_OxI: jnp.ndarray) -> jnp.ndarray:
    """x @ w.T over the last axis of `x`, for a weight stored (out, in): the tied LM head (V x D).

    Same values as `dense(x, w_OxI.T)`; only the backward pass differs in how it lays out the
    weight's gradient: autodiff asks for dW = dy^T x (N x V contracted over rows into V x D), which
    XLA:CPU runs slower than (x^T dy)^T (docs/benchmarks.md). The optimization barrier stops XLA
    from folding the transpose back into the slow form. Used on the CPU backend only.

    The backward pass runs under the decision active when the forward pass was traced: JAX
    traces a custom VJP's backward rule after the forward call has returned, outside the
    model's `use_backend` block, where `backend.active()` would be the host's.
    """
    return _dense_transposed(backend.active(), x, w_OxI)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _dense_transposed(decision, x, w_OxI):
    return _dense_transposed_fwd(decision, x, w_OxI)[0]


def _dense_transposed_fwd(decision, x, w_OxI):
    with backend.use_backend(decision):
        x_NxI = x.reshape(-1, x.shape[-1])
        y_NxO = matmul(x_NxI, w_OxI, transpose_b=True)
    return y_NxO.reshape(*x.shape[:-1], w_OxI.shape[0]), (x_NxI, w_OxI)


def _dense_transposed_bwd(decision, residuals, dy):
    x_NxI, w_OxI = residuals
    with backend.use_backend(decision):
        dy_NxO = dy.reshape(-1, w_OxI.shape[0])
        dx = matmul(dy_NxO, w_OxI).reshape(*dy.shape[:-1], w_OxI.shape[1])
        dw_IxO = jax.lax.optimization_barrier(jax.lax.dot_general(x_NxI, dy_NxO, (((0,), (0,)), ((), ()))))
    return dx.astype(x_NxI.dtype), dw_IxO.T.astype(w_OxI.dtype)


_dense_transposed.defvjp(_dense_transposed_fwd, _dense_transposed_bwd)


@jax.custom_jvp
def softmax(x: jnp.ndarray) -> jnp.ndarray:
    """Softmax over the last axis; the same forward values as `jax.nn.softmax`.

    Its derivative is written in terms of the output, dy = y * (dx - sum(y * dx)), so the backward
    pass keeps only y. `jax.nn.softmax` does the same only under the opt-in `jax_softmax_custom_jvp`
    flag; by default it differentiates through exp, sum and divide and keeps more B x K x GT x S
    arrays alive (docs/benchmarks.md: a smaller temp buffer and a faster train step).
    """
    unnormalized = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    return unnormalized / jnp.sum(unnormalized, axis=-1, keepdims=True)


@softmax.defjvp
def _softmax_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    y = softmax(x)
    return y, y * (x_dot - jnp.sum(y * x_dot, axis=-1, keepdims=True))


def _heads_last(out_BxKxGTxH: jnp.ndarray, G: int) -> jnp.ndarray:
    """Attention outputs from the grouped `B x K x (G T) x H` layout to `B x T x N x H`."""
    B, K, GT, H = out_BxKxGTxH.shape
    T = GT // G
    return out_BxKxGTxH.reshape(B, K, G, T, H).transpose(0, 3, 1, 2, 4).reshape(B, T, K * G, H)


class Attention(nnx.Module):
    """Grouped-query self-attention with RoPE, optional q/k norm, softcap and a KV cache.

    One definition (`attention.reference_attention`), four ways to compute it, chosen by the call
    and the active backend (`backend.py`); each is tested against the reference for every family
    (`tests/lm/test_attention.py`), and the measurements behind the CPU's are in
    docs/benchmarks.md ("Measurements behind the XLA:CPU choices"):

    | path                                | runs when                                   | backends |
    |-------------------------------------|---------------------------------------------|----------|
    | grouped: rank-4 batched matmuls,    | no cache, or a fresh prefill                | CPU      |
    | k^T behind a barrier, own softmax   |                                             |          |
    | fused: cuDNN / splash / XLA kernel  | no cache, or a fresh prefill, no softcap    | GPU, TPU |
    | cached: two-part softmax, the cache | a decode step, a prefill chunk after others | all      |
    | read in place, normalised after PV  |                                             |          |
    | blocked: the cache in 64-slot       | a prefill chunk after others (T > 1)        | CPU      |
    | blocks under an online softmax      |                                             |          |

    The CPU choices (rank-4 layout, barrier, PV before normalisation, blocks) are XLA:CPU
    tuning; the accelerators read no conditional and run no data-dependent loop per token.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        c = config
        D, N, K, H = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        self.config = config
        self.dtype = dtype
        self.q_proj = init_param(rngs, (D, N, H), ("embed", "heads", "head_dim"), param_dtype)
        self.k_proj = init_param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.v_proj = init_param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), param_dtype)
        self.o_proj = init_param(rngs, (N, H, D), ("heads", "head_dim", "embed"), param_dtype)
        if c.qkv_bias:
            self.q_bias = init_param(rngs, (N, H), ("heads", "head_dim"), param_dtype, init="zeros")
            self.k_bias = init_param(rngs, (K, H), ("kv_heads", "head_dim"), param_dtype, init="zeros")
            self.v_bias = init_param(rngs, (K, H), ("kv_heads", "head_dim"), param_dtype, init="zeros")
        if c.o_bias:
            self.o_bias = init_param(rngs, (D,), (None,), param_dtype, init="zeros")
        if c.qk_norm:
            self.q_norm = RMSNorm(H, eps=c.rms_norm_eps, style=c.norm_style, rngs=rngs, param_dtype=param_dtype)
            self.k_norm = RMSNorm(H, eps=c.rms_norm_eps, style=c.norm_style, rngs=rngs, param_dtype=param_dtype)

    def _project(self, x_BxTxD, name: str) -> jnp.ndarray:
        w = getattr(self, f"{name}_proj")[...].astype(self.dtype)
        y = dense(x_BxTxD, w)  # BTD,DNH->BTNH
        if self.config.qkv_bias:
            y = y + getattr(self, f"{name}_bias")[...].astype(self.dtype)
        return y

    def __call__(self, x_BxTxD: jnp.ndarray, *, cos_BxTxH: jnp.ndarray, sin_BxTxH: jnp.ndarray,
                 mask_BxTxS: jnp.ndarray, kv_cache=None, index: jnp.ndarray | None = None,
                 last_only: bool = False, fresh: bool = False):
        """Attend; with `kv_cache` (a `kv_cache.LayerCache`: this layer's cache before the call),
        the T new tokens occupy slots [index, index + T) and attend to the slots written before
        and to each other.

        last_only: only the last slot queries (keys and values are still formed for all T
        slots): out is `B x 1 x D`, equal to the last row of the full call's.
        fresh: the cache holds nothing before these tokens (a prefill from slot 0): they attend
        to each other alone, as without a cache (`mask_BxTxS` is then `B x T x T`), and their
        keys and values are returned for the cache.

        Returns (out_BxTxD, None without a cache, else the new tokens' (k_BxKxHxT, v_BxKxTxH)
        in the cache's dtype, for the caller to write at slot `index`: the cache itself is only
        read here, so neither a decode step nor a prefill chunk copies it).
        """
        c = self.config
        queries = slice(-1, None) if last_only else slice(None)  # the query slots
        mask_BxTxS = mask_BxTxS[:, queries]  # the query rows' masks
        q_BxTxNxH = self._project(x_BxTxD[:, queries], "q")
        k_BxTxKxH = self._project(x_BxTxD, "k")
        v_BxTxKxH = self._project(x_BxTxD, "v")
        if c.qk_norm:
            q_BxTxNxH = self.q_norm(q_BxTxNxH)
            k_BxTxKxH = self.k_norm(k_BxTxKxH)
        q_BxTxNxH = apply_rope(q_BxTxNxH, cos_BxTxH[:, queries], sin_BxTxH[:, queries])
        k_BxTxKxH = apply_rope(k_BxTxKxH, cos_BxTxH, sin_BxTxH)
        B, T, N, H = q_BxTxNxH.shape  # T: query slots (1 with last_only)
        K = c.num_kv_heads
        G = N // K
        # Batch axes (B, K) leading and the G*T query rows of each kv head stacked, so both
        # contractions and the softmax are plain rank-4 batched ops (the grouped path).
        q_BxKxGTxH = q_BxTxNxH.reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, H)
        # The scale goes on the queries (T x H per head), not on the scores (T x S per head):
        # one pass over the scores fewer; only the rounding of the product moves.
        q_BxKxGTxH = q_BxKxGTxH * jnp.asarray(c.attn_scale, self.dtype)
        if kv_cache is not None and not fresh:
            # Keys are stored B x K x H x S and values B x K x S x H (`kv_cache.py`): both
            # contractions then read the cache in the layout a matmul wants, so only the T new
            # keys and values are transposed, never the S cached ones.
            new_kv = (k_BxTxKxH.transpose(0, 2, 3, 1).astype(kv_cache.dtype),
                      v_BxTxKxH.transpose(0, 2, 1, 3).astype(kv_cache.dtype))
            k_new_BxKxHxT, v_new_BxKxTxH = (x.astype(self.dtype) for x in new_kv)
            S = kv_cache.max_len
            cached_BxTxS = mask_BxTxS & (jnp.arange(S) < index)  # slots written before this call
            new_BxTxT = jax.lax.dynamic_slice_in_dim(mask_BxTxS, index, k_BxTxKxH.shape[1],
                                                     axis=2)  # the new slots
            out_BxKxGTxH = attend_cached(q_BxKxGTxH, kv_cache, k_new_BxKxHxT=k_new_BxKxHxT,
                                         v_new_BxKxTxH=v_new_BxKxTxH, cached_BxTxS=cached_BxTxS,
                                         new_BxTxT=new_BxTxT, num_written=index, config=c, dtype=self.dtype)
            kv_cache = new_kv
            out_BxTxNxH = _heads_last(out_BxKxGTxH, G)
        elif backend.active().attention == "fused" and c.attn_logit_softcap is None:
            # the scale is passed to the kernel, not applied to the queries
            out_BxTxNxH = fused_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask_BxTxS, scale=c.attn_scale,
                                          implementation=backend.active().fused_implementation,
                                          causal=c.sliding_window is None)
        else:
            k_BxKxSxH = k_BxTxKxH.transpose(0, 2, 1, 3)
            v_BxKxSxH = v_BxTxKxH.transpose(0, 2, 1, 3)
            # On XLA:CPU k^T is materialised behind a barrier, so that the backward pass forms
            # dk^T = q^T dS (the small operand transposed) rather than dk = dS^T q.
            k_BxKxHxS = k_BxKxSxH.swapaxes(-1, -2)
            if backend.active().barriers:
                k_BxKxHxS = jax.lax.optimization_barrier(k_BxKxHxS)
            scores = masked_scores(matmul(q_BxKxGTxH, k_BxKxHxS), mask_BxTxS, G, c.attn_logit_softcap)
            out_BxTxNxH = _heads_last(matmul(softmax(scores).astype(self.dtype), v_BxKxSxH), G)
        if kv_cache is not None and fresh:
            kv_cache = (k_BxTxKxH.transpose(0, 2, 3, 1).astype(kv_cache.dtype),
                        v_BxTxKxH.transpose(0, 2, 1, 3).astype(kv_cache.dtype))
        out_BxTxD = dense(out_BxTxNxH, self.o_proj[...].astype(self.dtype), contract=2)  # BTNH,NHD->BTD
        if c.o_bias:
            out_BxTxD = out_BxTxD + self.o_bias[...].astype(self.dtype)
        return out_BxTxD, kv_cache


_ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


class MLP(nnx.Module):
    """Gated feed-forward: down(act(gate(x)) * up(x)) (SwiGLU / GeGLU)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        D, F = config.hidden_size, config.intermediate_size
        self.dtype = dtype
        self.act = config.hidden_act
        self.use_bias = config.mlp_bias
        self.gate_proj = init_param(rngs, (D, F), ("embed", "mlp"), param_dtype)
        self.up_proj = init_param(rngs, (D, F), ("embed", "mlp"), param_dtype)
        self.down_proj = init_param(rngs, (F, D), ("mlp", "embed"), param_dtype)
        if config.mlp_bias:
            self.gate_bias = init_param(rngs, (F,), (None,), param_dtype, init="zeros")
            self.up_bias = init_param(rngs, (F,), (None,), param_dtype, init="zeros")
            self.down_bias = init_param(rngs, (D,), (None,), param_dtype, init="zeros")

    def _linear(self, x, name: str):
        y = dense(x, getattr(self, f"{name}_proj")[...].astype(self.dtype))
        if self.use_bias:
            y = y + getattr(self, f"{name}_bias")[...].astype(self.dtype)
        return y

    def __call__(self, x_BxTxD: jnp.ndarray) -> jnp.ndarray:
        gate_BxTxF = _ACTIVATIONS[self.act](self._linear(x_BxTxD, "gate"))
        up_BxTxF = self._linear(x_BxTxD, "up")
        return self._linear(gate_BxTxF * up_BxTxF, "down")
