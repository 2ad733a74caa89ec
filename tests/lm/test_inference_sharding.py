"""Inference on a mesh moves activations, not weights: a decode step compiled on 8 (fake CPU)
devices under FSDP all-gathers every layer's weights for every token; under the rules inference
picks (`w2s_jax.parallel.inference_rules`: whole weights, or split over "tp") it gathers none.

Collectives are inserted by XLA's SPMD partitioner when the program is compiled (the lowered
StableHLO holds only sharding annotations), so the step is compiled for this host's CPU devices
and its HLO read; the partitioner is the same pass on every platform. The step is the
accelerators' (the GPU decision: stacked weights, no conditional), as a GPU or TPU would decode.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax.inference import generate
from w2s_jax.models import ModelConfig, Transformer, init_cache, load_pretrained, save_pretrained
from w2s_jax.models.backend import GPU
from w2s_jax.parallel import (
    MeshConfig,
    ShardingRules,
    batch_sharding,
    inference_rules,
    make_mesh,
    place_for_inference,
    shard_batch,
    shard_model,
)

CONFIG = ModelConfig.tiny(num_heads=8, num_kv_heads=4, eos_token_ids=(2,))  # D=32, H=8, F=64, V=128, L=2
ROWS = 8
WEIGHTS_PER_LAYER = 7  # q, k, v, o, gate, up, down


def _weight_bytes(model) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _collectives(mesh_config, rules) -> dict[str, int]:
    """Collectives of one decode step (a token per row through the model and its cache) compiled
    on `mesh_config` with the model placed under `rules`, counted in its HLO."""
    mesh = make_mesh(mesh_config)
    model = Transformer(CONFIG, rngs=nnx.Rngs(0), backend=GPU)
    shard_model(model, mesh, rules)
    model.backend = GPU  # the accelerators' decode step, compiled here for the CPU devices
    graphdef, state = nnx.split(model)
    cache = init_cache(CONFIG, batch_size=ROWS, max_len=32, stacked=True)
    cache = dataclasses.replace(
        cache, keys=jax.device_put(cache.keys, batch_sharding(mesh, 5, axis=1)),
        values=jax.device_put(cache.values, batch_sharding(mesh, 5, axis=1)),
        valid_BxS=jax.device_put(cache.valid_BxS, batch_sharding(mesh, 2)))
    rows = shard_batch({"token_Bx1": np.ones((ROWS, 1), np.int32), "position_Bx1": np.full((ROWS, 1), 3, np.int32)},
                       mesh)

    def step(state, cache, token_Bx1, position_Bx1):
        return nnx.merge(graphdef, state)(token_Bx1, positions_BxT=position_Bx1,
                                          valid_BxT=jnp.ones_like(token_Bx1, bool), cache=cache)

    hlo = jax.jit(step).trace(state, cache, rows["token_Bx1"], rows["position_Bx1"]).lower().compile().as_text()
    return {op: len(re.findall(rf"= \S+ {op}(-start)?\(", hlo))
            for op in ("all-gather", "all-reduce", "reduce-scatter", "all-to-all")}


def test_fsdp_decoding_gathers_every_weight_and_inference_rules_gather_none():
    assert jax.device_count() == 8, "tests/conftest.py asks for 8 fake CPU devices"
    fsdp = _collectives(MeshConfig(fsdp=8), ShardingRules.fsdp())
    assert fsdp["all-gather"] >= WEIGHTS_PER_LAYER, fsdp  # the layer scan's body: each weight, every token
    whole = _collectives(MeshConfig(fsdp=8), inference_rules(10**6, make_mesh(MeshConfig(fsdp=8))))
    assert whole == dict.fromkeys(whole, 0), whole  # data parallel: no collective at all
    mesh_config = MeshConfig(data=4, fsdp=1, tp=2)
    rules = inference_rules(10**6, make_mesh(mesh_config))
    assert rules == ShardingRules.tensor_parallel()
    split = _collectives(mesh_config, rules)
    assert split["all-gather"] == 0 and split["all-reduce"] >= 2, split  # attention and MLP outputs summed


def test_inference_rules_fall_back_to_fsdp_only_when_the_weights_do_not_fit():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    gib = 2**30
    assert inference_rules(10 * gib, None) is None
    assert inference_rules(10 * gib, mesh) == ShardingRules.tensor_parallel()  # CPU: no memory limit reported
    assert inference_rules(10 * gib, mesh, memory=16 * gib) == ShardingRules.tensor_parallel()  # 5 GiB per device
    with pytest.warns(UserWarning, match=r"do not fit 2 device\(s\) of 8.0 GiB .* tp >= 3"):
        assert inference_rules(10 * gib, mesh, memory=8 * gib) == ShardingRules.fsdp_tp()
    with pytest.raises(ValueError, match="weight_bytes=-1"):
        inference_rules(-1, mesh)


def test_load_pretrained_on_a_mesh_places_weights_for_inference(tmp_path):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    save_pretrained(model, CONFIG, tmp_path)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    loaded, _ = load_pretrained(tmp_path, mesh=mesh, layout="stacked")
    q = loaded.layers.attn.q_proj.get_value()  # L x D x N x H: heads over tp, the width whole
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, None, "tp", None)
    assert loaded.embedding.get_value().sharding.spec == jax.sharding.PartitionSpec("tp", None)
    trained, _ = load_pretrained(tmp_path, mesh=mesh, rules=ShardingRules.fsdp_tp(), layout="stacked")
    assert trained.layers.attn.q_proj.get_value().sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tp", None)
    assert _weight_bytes(loaded) == _weight_bytes(model)


def test_tensor_parallel_generation_equals_unsharded():
    prompts = [np.random.default_rng(i).integers(3, CONFIG.vocab_size, 5 + i).tolist() for i in range(ROWS)]
    plain = generate(Transformer(CONFIG, rngs=nnx.Rngs(0)), None, prompts, max_new_tokens=6, batch_size=ROWS)
    mesh = make_mesh(MeshConfig(data=4, fsdp=1, tp=2))
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    shard_model(model, mesh, inference_rules(_weight_bytes(model), mesh))
    sharded = generate(model, None, prompts, max_new_tokens=6, batch_size=ROWS, mesh=mesh)
    assert sharded.token_ids == plain.token_ids


def test_a_model_trained_under_fsdp_is_placed_for_inference_before_it_generates():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    shard_model(model, mesh, ShardingRules.fsdp_tp())
    assert model.layers.attn.q_proj.get_value().sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tp", None)
    assert place_for_inference(model, mesh) == ShardingRules.tensor_parallel()
    assert model.layers.attn.q_proj.get_value().sharding.spec == jax.sharding.PartitionSpec(None, None, "tp", None)
    assert model.placement == (mesh, ShardingRules.tensor_parallel())
    assert place_for_inference(model, None) is None
