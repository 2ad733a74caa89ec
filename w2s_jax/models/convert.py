"""The table between Hugging Face tensor names/layouts and our parameter paths/layouts.

HF `nn.Linear` weights are `out x in`; ours are `in x out` with heads split out
(q: D x N x H, o: N x H x D). Per-layer HF tensors (`model.layers.{i}.*`) are slice i of our
stacked layer parameters (leading layer axis): their entries carry `layer=i`. Each entry converts
a tensor both ways with numpy views where possible, so a memory-mapped checkpoint tensor is not
copied until it is placed on a device; `transposed` marks the linear weights, whose conversion
is a transpose the loader does tile by tile (`host_copy.transpose_into`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from w2s_jax.models.config import ModelConfig

Path = tuple[str | int, ...]

SCORE_WEIGHT = "score.weight"  # a `<Family>ForSequenceClassification` checkpoint's head: num_labels x D


@dataclasses.dataclass(frozen=True)
class TensorMap:
    """One parameter: our path, the HF name, and the layout conversions both ways."""

    path: Path  # our nnx state path, e.g. ("layers", "attn", "q_proj")
    hf_name: str  # e.g. "model.layers.0.self_attn.q_proj.weight"
    hf_shape: tuple[int, ...]  # shape of the tensor in the HF checkpoint
    from_hf: Callable[[np.ndarray], np.ndarray]  # HF layout -> ours (layer `layer`'s slice if stacked)
    to_hf: Callable[[np.ndarray], np.ndarray]  # our parameter at `path` (stacked: all layers) -> HF layout
    layer: int | None = None  # index on the stacked parameter's layer axis; None: not per-layer
    transposed: bool = False  # from_hf is `w.T.reshape(...)`: the loader copies it as a transpose


def _same(shape):
    return lambda w: w.reshape(shape)


def _linear_in(shape):
    """HF (out, in) -> ours: transpose, then split axes, e.g. (N*H, D) -> (D, N, H) or (D, N*H) -> (N, H, D)."""
    return lambda w: w.T.reshape(shape)


def _linear_in_back(out_in):
    return lambda w: w.reshape(out_in[1], out_in[0]).T


def _at_layer(layer: int, to_hf):
    """`to_hf` of slice `layer` of a stacked parameter."""
    return lambda w: to_hf(w[layer])


def tensor_maps(config: ModelConfig) -> list[TensorMap]:
    """Every parameter of `Transformer(config)` with its HF counterpart."""
    c = config
    D, N, K, H, F, V = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size,
                        c.vocab_size)
    maps = [TensorMap(("embedding",), "model.embed_tokens.weight", (V, D), _same((V, D)), _same((V, D))),
            TensorMap(("final_norm", "weight"), "model.norm.weight", (D,), _same((D,)), _same((D,)))]
    if not c.tie_word_embeddings:
        maps.append(TensorMap(("lm_head",), "lm_head.weight", (V, D), _linear_in((D, V)), _linear_in_back((V, D)),
                              transposed=True))
    for i in range(c.num_layers):
        hf = f"model.layers.{i}."
        ours: Path = ("layers",)

        def linear(sub: tuple, name: str, out_in: tuple[int, int], ours_shape: tuple[int, ...]):
            maps.append(TensorMap(ours + sub, hf + name + ".weight", out_in, _linear_in(ours_shape),
                                  _at_layer(i, _linear_in_back(out_in)), layer=i, transposed=True))

        def vector(sub: tuple, name: str, hf_len: int, ours_shape: tuple[int, ...]):
            maps.append(TensorMap(ours + sub, hf + name, (hf_len,), _same(ours_shape),
                                  _at_layer(i, _same((hf_len,))), layer=i))

        linear(("attn", "q_proj"), "self_attn.q_proj", (N * H, D), (D, N, H))
        linear(("attn", "k_proj"), "self_attn.k_proj", (K * H, D), (D, K, H))
        linear(("attn", "v_proj"), "self_attn.v_proj", (K * H, D), (D, K, H))
        maps.append(TensorMap(ours + ("attn", "o_proj"), hf + "self_attn.o_proj.weight", (D, N * H),
                              _linear_in((N, H, D)), _at_layer(i, _linear_in_back((D, N * H))), layer=i,
                              transposed=True))
        if c.qkv_bias:
            vector(("attn", "q_bias"), "self_attn.q_proj.bias", N * H, (N, H))
            vector(("attn", "k_bias"), "self_attn.k_proj.bias", K * H, (K, H))
            vector(("attn", "v_bias"), "self_attn.v_proj.bias", K * H, (K, H))
        if c.o_bias:
            vector(("attn", "o_bias"), "self_attn.o_proj.bias", D, (D,))
        if c.qk_norm:
            vector(("attn", "q_norm", "weight"), "self_attn.q_norm.weight", H, (H,))
            vector(("attn", "k_norm", "weight"), "self_attn.k_norm.weight", H, (H,))
        linear(("mlp", "gate_proj"), "mlp.gate_proj", (F, D), (D, F))
        linear(("mlp", "up_proj"), "mlp.up_proj", (F, D), (D, F))
        linear(("mlp", "down_proj"), "mlp.down_proj", (D, F), (F, D))
        if c.mlp_bias:
            vector(("mlp", "gate_bias"), "mlp.gate_proj.bias", F, (F,))
            vector(("mlp", "up_bias"), "mlp.up_proj.bias", F, (F,))
            vector(("mlp", "down_bias"), "mlp.down_proj.bias", D, (D,))
        vector(("input_norm", "weight"), "input_layernorm.weight", D, (D,))
        vector(("post_attn_norm", "weight"), "post_attention_layernorm.weight", D, (D,))
        if c.sandwich_norms:
            vector(("pre_mlp_norm", "weight"), "pre_feedforward_layernorm.weight", D, (D,))
            vector(("post_mlp_norm", "weight"), "post_feedforward_layernorm.weight", D, (D,))
    return maps


def optional_hf_names(config: ModelConfig) -> frozenset[str]:
    """HF tensors that may be present but carry no information for us (a tied lm_head copy)."""
    return frozenset({"lm_head.weight"}) if config.tie_word_embeddings else frozenset()
