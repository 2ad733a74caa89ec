"""The decoder-only Transformer, its KV cache and the attention masks.

Layers are stacked: every parameter of `Transformer.layers` has a leading layer axis (logical
axis "layers", never sharded) and the forward pass is one `jax.lax.scan` over it, so the compiled
program holds one layer whatever the depth (compile time does not grow with it) and a weight
stored in bfloat16 is converted for its matmuls inside its own layer's step, never all at once.
Per-layer differences are per-layer data: whether a layer uses the sliding window is a boolean
scanned with the weights. On the CPU backend the KV cache of a decode step keeps one array per
layer (`kv_cache.py` says why), and so can the matmul weights of a model loaded for inference
(`layer_weights.py`); accelerators read both stacked (`backend.py`).

Slots: without a cache, query t and key s are slots t and s of the input; with a cache, the T
new tokens occupy slots [index, index + T) of an S-slot cache. A query at slot q sees key slot s
iff s is valid, s <= q, and (for sliding-window layers) s > q - W — the slot arithmetic
transformers uses (its `cache_position`), so left padding shifts no windows.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from w2s_jax.models import backend as backends
from w2s_jax.models.backend import Backend, use_backend
from w2s_jax.models.config import ModelConfig
from w2s_jax.models.kv_cache import KVCache
from w2s_jax.models.layer_weights import LayerWeight
from w2s_jax.models.attention import softcap
from w2s_jax.models.layers import MLP, Attention, RMSNorm, dense, dense_transposed, init_param
from w2s_jax.models.matmul import WEIGHT_PRODUCT, matmul
from w2s_jax.models.rope import rope_cos_sin
from w2s_jax.parallel.placement import constrain

RESIDUAL_AXES = ("batch", None, None)  # the residual stream `B x T x D`: rows split, the rest whole


def attention_mask(valid_BxS: jax.Array, q_slot_T: jax.Array, window: int | None) -> jax.Array:
    """Boolean mask `B x T x S`: key slot s visible to query slot q (see module docstring)."""
    k_slot_S = jnp.arange(valid_BxS.shape[1])
    visible_TxS = k_slot_S[None, :] <= q_slot_T[:, None]
    if window is not None:
        visible_TxS &= k_slot_S[None, :] > q_slot_T[:, None] - window
    return valid_BxS[:, None, :] & visible_TxS[None]


class DecoderLayer(nnx.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)); Gemma 2 adds post-norms."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        c = config
        norm = lambda: RMSNorm(c.hidden_size, eps=c.rms_norm_eps, style=c.norm_style, rngs=rngs,  # noqa: E731
                               param_dtype=param_dtype)
        self.input_norm = norm()
        self.attn = Attention(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.post_attn_norm = norm()
        self.mlp = MLP(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.sandwich = c.sandwich_norms
        if c.sandwich_norms:
            self.pre_mlp_norm = norm()
            self.post_mlp_norm = norm()

    def __call__(self, x_BxTxD, *, cos_BxTxH, sin_BxTxH, mask_BxTxS, kv_cache=None, index=None,
                 last_only: bool = False, fresh: bool = False):
        """The block on `x_BxTxD`; with `last_only`, keys and values for every slot but the
        output (`B x 1 x D`) for the last slot alone (`Attention`, as is `fresh`)."""
        h_BxTxD, kv_cache = self.attn(self.input_norm(x_BxTxD), cos_BxTxH=cos_BxTxH, sin_BxTxH=sin_BxTxH,
                                      mask_BxTxS=mask_BxTxS, kv_cache=kv_cache, index=index,
                                      last_only=last_only, fresh=fresh)
        if last_only:
            x_BxTxD = x_BxTxD[:, -1:]
        if self.sandwich:
            x_BxTxD = x_BxTxD + self.post_attn_norm(h_BxTxD)
            return x_BxTxD + self.post_mlp_norm(self.mlp(self.pre_mlp_norm(x_BxTxD))), kv_cache
        x_BxTxD = x_BxTxD + h_BxTxD
        return x_BxTxD + self.mlp(self.post_attn_norm(x_BxTxD)), kv_cache

    def __getitem__(self, layer: int) -> DecoderLayer:
        """Layer `layer` of a stacked DecoderLayer, as its own module (slices of the stacked
        arrays: a copy, for inspection; the model itself scans the stack)."""
        graphdef, state = nnx.split(self)
        return nnx.merge(graphdef, jax.tree.map(lambda x: x[layer], state))


def stacked_layers(config: ModelConfig, *, rngs: nnx.Rngs, dtype, param_dtype) -> DecoderLayer:
    """`config.num_layers` DecoderLayers as one, every parameter stacked on a leading axis whose
    logical axis is "layers" (each layer initialised with its own keys, as a loop of layers is)."""
    layers = [DecoderLayer(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
              for _ in range(config.num_layers)]
    graphdef, first = nnx.split(layers[0])
    states = [first] + [nnx.split(layer)[1] for layer in layers[1:]]
    stacked = nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack(xs), *states))
    for _, node in nnx.iter_graph(stacked):
        if isinstance(node, nnx.Variable):
            axes = node.get_metadata().get("logical_axes")
            node.set_metadata("logical_axes", ("layers",) + tuple(axes or (None,) * (node.get_value().ndim - 1)))
    return stacked


@jax.custom_vjp
def take_layer(stacked: jax.Array, layer: jax.Array) -> jax.Array:
    """`stacked[layer]`; on the CPU backend a 16-bit float weight is sliced behind an
    optimization barrier.

    XLA:CPU slices a bf16 array through a float32 conversion of its operand, and inside the layer
    scan loop-invariant code motion hoisted that conversion out of the loop: a float32 copy of
    every layer's weights. Behind the barrier the stack counts as loop-variant and only the layer
    in use is converted (docs/benchmarks.md). The gradient is that of the plain slice, written out
    (a zero stack with the layer's cotangent in place).
    """
    if (backends.active().barriers and stacked.dtype.itemsize == 2
            and jnp.issubdtype(stacked.dtype, jnp.floating)):
        stacked, layer = jax.lax.optimization_barrier((stacked, layer))
    return jax.lax.dynamic_index_in_dim(stacked, layer, keepdims=False)


def _take_layer_fwd(stacked, layer):
    return take_layer(stacked, layer), (jax.ShapeDtypeStruct(stacked.shape, stacked.dtype), layer)


def _take_layer_bwd(residuals, ct):
    shape, layer = residuals
    grad = jax.lax.dynamic_update_index_in_dim(jnp.zeros(shape.shape, shape.dtype), ct.astype(shape.dtype),
                                               layer, axis=0)
    return grad, None


take_layer.defvjp(_take_layer_fwd, _take_layer_bwd)


def _layer_params(layer_params: nnx.State, layer: jax.Array) -> nnx.State:
    """Layer `layer`'s parameters inside the scan: a slice of each stacked array (`take_layer`),
    a `LayerWeight` view of each per-layer tuple (`layer_weights.py`)."""
    def at(variable: nnx.Variable) -> nnx.Variable:
        value = variable.get_value()
        if isinstance(value, tuple):
            return variable.replace(value=LayerWeight.at(value, layer, variable.get_metadata().get("logical_axes")))
        return variable.replace(value=take_layer(value, layer))

    return jax.tree.map(at, layer_params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def embedding_rows(table_VxD: jax.Array, tokens_BxT: jax.Array) -> jax.Array:
    """`table_VxD[tokens_BxT]`; on the CPU backend the gather sits behind an optimization barrier.

    XLA:CPU gathers from a bf16 table through a float32 conversion of its operand, and inside a
    loop (the decode loop, the prefill chunks) loop-invariant code motion hoisted that conversion
    of the whole table out of the loop; behind the barrier the conversion stays fused with the
    gather, reading only the rows gathered (`tests/lm/test_layer_scan.py` measures the loop's
    scratch memory; docs/benchmarks.md).
    """
    if backends.active().barriers:
        table_VxD, tokens_BxT = jax.lax.optimization_barrier((table_VxD, tokens_BxT))
    return jnp.take(table_VxD, tokens_BxT, axis=0)


REMAT_POLICIES = {
    "full": None,  # keep nothing inside a layer: recompute its whole forward pass
    "dots": jax.checkpoint_policies.save_from_both_policies(  # keep matmul outputs (a 16-bit one is named)
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable, jax.checkpoint_policies.save_only_these_names(WEIGHT_PRODUCT)),
}


class Transformer(nnx.Module):
    """Decoder-only LM for every family in `ModelConfig.model_type` (see the shared API contract).

    `backend` (`backend.py`) says what the model runs on its platform; it is static (part of the
    graph definition), set from the default device here and from the mesh by `load_pretrained`.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 remat: str | None = None, backend: Backend | str | None = None):
        """remat: None, or a key of `REMAT_POLICIES`: recompute each layer in the backward pass
        ("full") or all but its matmul outputs ("dots"), for training at depth. backend: a
        `Backend` or platform name (None: the default device's)."""
        c = config
        if remat is not None and remat not in REMAT_POLICIES:
            raise ValueError(f"remat={remat!r} is not a policy; use None or one of {sorted(REMAT_POLICIES)}")
        self.config = config
        self.dtype = dtype
        self.remat = remat
        self.backend = backends.for_devices() if backend is None else backends.for_platform(backend)
        self.placement = None  # (mesh, rules) the weights were placed with (`placed_on`); None: one device
        self.embedding = init_param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), param_dtype)
        self.layers = stacked_layers(c, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.final_norm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps, style=c.norm_style, rngs=rngs,
                                  param_dtype=param_dtype)
        if not c.tie_word_embeddings:
            self.lm_head = init_param(rngs, (c.hidden_size, c.vocab_size), ("embed", "vocab"), param_dtype)

    def placed_on(self, mesh, rules=None) -> None:
        """Called by `w2s_jax.parallel.shard_model` (and `load_pretrained`) after placing the
        weights on `mesh` under `rules`: the model runs what the mesh's platform runs, and pins its
        residual stream's rows to the mesh's batch axes (`residual`)."""
        self.backend = backends.for_mesh(mesh)
        self.placement = None if mesh is None else (mesh, rules)

    def residual(self, x_BxTxD: jax.Array) -> jax.Array:
        """The residual stream pinned to its sharding on the model's mesh (`RESIDUAL_AXES`): rows
        over ("data", "fsdp"), the width whole, whatever the weights' split; unchanged without a
        mesh (the program is then the same as without this call)."""
        return x_BxTxD if self.placement is None else constrain(x_BxTxD, RESIDUAL_AXES, *self.placement)

    def embed(self, tokens_BxT: jax.Array) -> jax.Array:
        """Token embeddings `B x T x D` in the activation dtype (sqrt(D)-scaled for Gemma)."""
        with use_backend(self.backend):
            x_BxTxD = embedding_rows(self.embedding[...], tokens_BxT).astype(self.dtype)
        if self.config.embed_scale:
            x_BxTxD = x_BxTxD * jnp.asarray(self.config.hidden_size ** 0.5, jnp.float32).astype(self.dtype)
        return x_BxTxD

    def unembed(self, h_BxTxD: jax.Array) -> jax.Array:
        """Final norm, output projection and logit softcap; float32 logits `... x V` for hidden
        states `... x D` (any leading axes: `B x T x D`, or `N x D` gathered positions)."""
        with use_backend(self.backend):
            h_BxTxD = self.final_norm(h_BxTxD)
            if not self.config.tie_word_embeddings:
                logits = dense(h_BxTxD, self.lm_head[...].astype(self.dtype))  # BTD,DV->BTV
            elif self.backend.barriers:  # XLA:CPU: the weight gradient laid out as it runs fastest
                logits = dense_transposed(h_BxTxD, self.embedding[...].astype(self.dtype))  # BTD,VD->BTV
            else:
                h_NxD = h_BxTxD.reshape(-1, h_BxTxD.shape[-1])
                logits = matmul(h_NxD, self.embedding[...].astype(self.dtype), transpose_b=True)
                logits = logits.reshape(*h_BxTxD.shape[:-1], -1)
        return softcap(logits.astype(jnp.float32), self.config.final_logit_softcap)

    def __call__(self, tokens_BxT: jax.Array, *, positions_BxT: jax.Array, valid_BxT: jax.Array,
                 cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
        """Logits `B x T x V` (float32) and the updated cache (None without one).

        positions_BxT: RoPE positions (int); valid_BxT: False on left padding. With `cache`, the
        tokens are written at slots [cache.index, cache.index + T); the caller keeps
        cache.index + T <= cache.max_len (XLA clamps out-of-range writes instead of failing).
        A caller that needs logits at a few positions only calls :meth:`hidden` and unembeds
        those (`unembed` or `target_logprobs`): the full array is B x T x V float32.
        """
        h_BxTxD, cache = self.hidden(tokens_BxT, positions_BxT=positions_BxT, valid_BxT=valid_BxT, cache=cache)
        return self.unembed(h_BxTxD), cache

    def hidden(self, tokens_BxT: jax.Array, *, positions_BxT: jax.Array, valid_BxT: jax.Array,
               cache: KVCache | None = None, last_only: bool = False,
               fresh: bool = False) -> tuple[jax.Array, KVCache | None]:
        """The last layer's output `B x T x D` (before the final norm) and the updated cache.

        Same arguments as `__call__`; `unembed(hidden(...)[0])` are its logits.

        last_only: only the last slot's output is wanted (`B x 1 x D`; generation's prefill).
        Where the backend says so (`Backend.last_slot_only`, XLA:CPU), the last layer forms its
        queries, attention, output projection and MLP for the last slot alone, as a `lax.cond`
        branch of the one layer scan (a call after the scan made XLA copy the cache); elsewhere
        every layer runs whole and the last slot is taken after (no conditional in the program).
        fresh: the cache is empty (`cache.index` is 0, a prefill of the whole prompt): the tokens
        attend to each other alone, as without a cache, and are written at slots [0, T).
        """
        with use_backend(self.backend):
            return self._hidden(tokens_BxT, positions_BxT=positions_BxT, valid_BxT=valid_BxT, cache=cache,
                                last_only=last_only, fresh=fresh)

    def _hidden(self, tokens_BxT, *, positions_BxT, valid_BxT, cache, last_only, fresh):
        c = self.config
        T = tokens_BxT.shape[1]
        x_BxTxD = self.residual(self.embed(tokens_BxT))
        cos_BxTxH, sin_BxTxH = rope_cos_sin(positions_BxT, c, self.dtype)
        if cache is None:
            q_slot_T, kv_valid_BxS, index = jnp.arange(T), valid_BxT.astype(bool), None
        else:
            if T > cache.max_len:
                raise ValueError(f"{T} new tokens do not fit a cache of max_len={cache.max_len}")
            index = jnp.zeros((), jnp.int32) if fresh else cache.index
            q_slot_T = index + jnp.arange(T)
            cache_valid_BxS = jax.lax.dynamic_update_slice(cache.valid_BxS, valid_BxT.astype(bool), (0, index))
            # a fresh prefill's keys are its own tokens: the mask is theirs alone, `T x T`
            kv_valid_BxS = valid_BxT.astype(bool) if fresh else cache_valid_BxS
        windows = {c.layer_window(i) for i in range(c.num_layers)}
        full_mask_BxTxS = attention_mask(kv_valid_BxS, q_slot_T, None)
        window_mask_BxTxS = (full_mask_BxTxS if c.sliding_window is None or windows == {None}
                             else attention_mask(kv_valid_BxS, q_slot_T, c.sliding_window))
        sliding_L = jnp.asarray([c.layer_window(i) is not None for i in range(c.num_layers)])
        graphdef, layer_params = nnx.split(self.layers)

        def run_layer(x_BxTxD, per_layer, *, last_only: bool):
            layer_index, sliding = per_layer
            layer = nnx.merge(graphdef, _layer_params(layer_params, layer_index))
            mask_BxTxS = jnp.where(sliding, window_mask_BxTxS, full_mask_BxTxS)
            return layer(x_BxTxD, cos_BxTxH=cos_BxTxH, sin_BxTxH=sin_BxTxH, mask_BxTxS=mask_BxTxS,
                         kv_cache=None if cache is None else cache.layer(layer_index), index=index,
                         last_only=last_only, fresh=fresh)

        def layer_step(x_BxTxD, per_layer):
            if not (last_only and self.backend.last_slot_only):
                x_BxTxD, new_kv = run_layer(x_BxTxD, per_layer, last_only=False)
                return self.residual(x_BxTxD), new_kv

            def last_slot(x_BxTxD):  # the last layer: its output for the last slot, in that slot
                out_Bx1xD, new_kv = run_layer(x_BxTxD, per_layer, last_only=True)
                return x_BxTxD.at[:, -1:].set(out_Bx1xD), new_kv

            x_BxTxD, new_kv = jax.lax.cond(per_layer[0] == c.num_layers - 1, last_slot,
                                           lambda x: run_layer(x, per_layer, last_only=False), x_BxTxD)
            return self.residual(x_BxTxD), new_kv

        if self.remat is not None:
            layer_step = jax.checkpoint(layer_step, policy=REMAT_POLICIES[self.remat])
        # The layers only read the cache (each layer's arrays in place, `kv_cache.LayerCache`) and
        # return their T new keys and values, written into it here in one update per layer, in
        # place: a cache passed through the scan and returned from it is copied whole every step.
        x_BxTxD, new_L = jax.lax.scan(layer_step, x_BxTxD, (jnp.arange(c.num_layers), sliding_L))
        if last_only:
            x_BxTxD = x_BxTxD[:, -1:]
        if cache is None:
            return x_BxTxD, None
        if fresh:
            cache = dataclasses.replace(cache, index=jnp.zeros((), jnp.int32))
        return x_BxTxD, cache.written(new_L[0], new_L[1], cache_valid_BxS, T)
