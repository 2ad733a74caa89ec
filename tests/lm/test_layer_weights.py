"""Per-layer matmul weights (the inference layout, `models/layer_weights.py`): the same values as
the stacked layout, converted both ways, exported, placed on a mesh, refused where training
needs the stack, and read in place by the compiled program (no per-layer weight copy)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from w2s_jax.models import ModelConfig, Transformer, load_pretrained, save_pretrained, to_layout
from w2s_jax.models.layer_weights import is_per_layer
from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh, shard_model

CONFIG = dataclasses.replace(ModelConfig.tiny("gemma2", num_layers=3), sliding_window=3, sliding_layers=(0, 2))
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _inputs(config, B=2, T=7, seed=0):
    tokens = jnp.asarray(np.random.default_rng(seed).integers(0, config.vocab_size, (B, T)), jnp.int32)
    return tokens, jnp.broadcast_to(jnp.arange(T), (B, T)), jnp.ones((B, T), bool)


def _logits(model, config=CONFIG):
    tokens, positions, valid = _inputs(config)
    return np.asarray(nnx.jit(lambda m: m(tokens, positions_BxT=positions, valid_BxT=valid)[0])(model))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_per_layer_gives_the_stacked_logits_and_converts_back_exactly(dtype):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype)
    stacked_q = np.asarray(model.layers.attn.q_proj.get_value())
    expected = _logits(model)
    to_layout(model, "per_layer")
    q = model.layers.attn.q_proj.get_value()
    D, N, H = stacked_q.shape[1:]
    # stored out x in (HF's layout), whatever the dtype
    assert isinstance(q, tuple) and len(q) == CONFIG.num_layers
    assert q[1].shape == (N, H, D) and q[1].dtype == dtype
    o = model.layers.attn.o_proj.get_value()  # ours N x H x D: two input axes
    assert o[0].shape == (D, N, H)
    # norms and biases stay stacked: only the matmul weights go per layer
    assert model.layers.input_norm.weight.get_value().shape == (CONFIG.num_layers, CONFIG.hidden_size)
    # float32: the contraction order of an out x in product differs (rounding only)
    np.testing.assert_allclose(_logits(model), expected, rtol=1e-5, atol=1e-6)
    to_layout(model, "stacked")
    assert not is_per_layer(model)
    np.testing.assert_array_equal(np.asarray(model.layers.attn.q_proj.get_value()), stacked_q)


def test_training_and_lora_convert_per_layer_weights_to_stacked():
    """A model loaded per layer (the CPU's inference default) is trained or given LoRA adapters
    without its caller converting it: the weights come back stacked, with the same values."""
    from w2s_jax.models.layer_weights import check_stacked
    from w2s_jax.train.lora import apply_lora

    stacked_q = np.asarray(Transformer(CONFIG, rngs=nnx.Rngs(0)).layers.attn.q_proj.get_value())
    model = to_layout(Transformer(CONFIG, rngs=nnx.Rngs(0)), "per_layer")
    check_stacked(model, what="training")  # what `train` calls first
    assert not is_per_layer(model)
    np.testing.assert_array_equal(np.asarray(model.layers.attn.q_proj.get_value()), stacked_q)
    model = to_layout(Transformer(CONFIG, rngs=nnx.Rngs(0)), "per_layer")
    apply_lora(model, rank=2, alpha=4.0, targets=("q_proj",), key=jax.random.key(0))
    assert not is_per_layer(model)
    with pytest.raises(ValueError, match="layout='rows'"):
        to_layout(model, "rows")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_export_from_per_layer_equals_export_from_stacked(tmp_path, dtype):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype)
    save_pretrained(model, CONFIG, tmp_path / "stacked")
    save_pretrained(to_layout(model, "per_layer"), CONFIG, tmp_path / "per_layer")
    from w2s_jax.models.safetensors_format import SafetensorsFile

    a, b = (SafetensorsFile(tmp_path / d / "model.safetensors") for d in ("stacked", "per_layer"))
    assert sorted(a.names()) == sorted(b.names())
    for name in a.names():
        np.testing.assert_array_equal(a.get(name), b.get(name))
    loaded, _ = load_pretrained(tmp_path / "per_layer", dtype=dtype, layout="per_layer")
    np.testing.assert_array_equal(_logits(loaded), _logits(to_layout(model, "per_layer")))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_per_layer_weights_on_a_mesh_keep_their_rules_minus_the_layer_axis(tmp_path, dtype):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype)
    expected = _logits(model)
    save_pretrained(model, CONFIG, tmp_path)
    mesh = make_mesh(MeshConfig(fsdp=4, tp=2))
    kw = dict(dtype=dtype, mesh=mesh, rules=ShardingRules.fsdp_tp())
    loaded, _ = load_pretrained(tmp_path, layout="per_layer", **kw)
    converted = to_layout(load_pretrained(tmp_path, **kw)[0], "per_layer")
    placed = to_layout(Transformer(CONFIG, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype), "per_layer")
    shard_model(placed, mesh, ShardingRules.fsdp_tp())
    for sharded in (loaded, converted, placed):
        for q in sharded.layers.attn.q_proj.get_value():  # N x H x D each (out x in)
            assert q.sharding.spec == P("tp", None, "fsdp")
        np.testing.assert_allclose(_logits(sharded), expected, atol=1e-5 if dtype == jnp.float32 else 0.05, rtol=0)
    plain, _ = load_pretrained(tmp_path, dtype=dtype, layout="per_layer")
    for a, b in zip(plain.layers.mlp.down_proj.get_value(), model.layers.mlp.down_proj.get_value()):
        np.testing.assert_array_equal(a, b.T)  # loaded as stored: out x in


def test_decode_reads_per_layer_weights_in_place():
    """The compiled single-token step copies no layer's weights: its scratch memory is below one
    layer's matmul weights with per-layer arrays, and above it when the stacked slices are copied
    (the copy this layout exists to avoid; `layer_weights.py`)."""
    config = dataclasses.replace(ModelConfig.tiny("llama"), hidden_size=256, intermediate_size=1024, num_layers=4,
                                 num_heads=4, num_kv_heads=2, head_dim=64)
    from w2s_jax.models import init_cache

    def step_scratch(model):
        graphdef, state = nnx.split(model)
        cache = init_cache(config, batch_size=1, max_len=8)
        tokens, positions, valid = (x[:, :1] for x in _inputs(config, B=1, T=1))

        def step(state, cache):
            return nnx.merge(graphdef, state).hidden(tokens, positions_BxT=positions, valid_BxT=valid, cache=cache)

        return jax.jit(step).lower(state, cache).compile().memory_analysis().temp_size_in_bytes

    model = Transformer(config, rngs=nnx.Rngs(0))
    layer_bytes = sum(w.get_value()[0].nbytes for w in (model.layers.mlp.gate_proj, model.layers.mlp.up_proj,
                                                        model.layers.mlp.down_proj))
    stacked = step_scratch(model)
    per_layer = step_scratch(to_layout(model, "per_layer"))
    assert stacked > layer_bytes / 3, (stacked, layer_bytes)
    assert per_layer < layer_bytes / 3, (per_layer, layer_bytes)


def test_a_classifier_goes_per_layer_with_its_logits_but_lora_adapters_stay_stacked():
    """A classifier's head is an `nnx.LoRAParam` (LoRA runs train it) but no adapter: the classifier
    converts, with the same class logits; a model with LoRA adapters on its weights is refused."""
    from w2s_jax.models import Classifier
    from w2s_jax.train.lora import apply_lora

    def classifier():
        model = Classifier(Transformer(CONFIG, rngs=nnx.Rngs(0)), num_classes=3)
        key_w, key_b = jax.random.split(jax.random.key(1))
        model.score_kernel.set_value(jax.random.normal(key_w, model.score_kernel.get_value().shape))
        model.score_bias.set_value(jax.random.normal(key_b, (3,)))
        return model

    def class_logits(model):  # B x C, each row's last position
        tokens, positions, valid = _inputs(CONFIG)
        return np.asarray(nnx.jit(lambda m: m(tokens, positions_BxT=positions, valid_BxT=valid))(model))

    model = classifier()
    expected = class_logits(model)
    assert expected.shape == (2, 3) and np.ptp(expected) > 0.1
    to_layout(model, "per_layer")
    assert is_per_layer(model) and isinstance(model.backbone.layers.mlp.up_proj.get_value(), tuple)
    np.testing.assert_allclose(class_logits(model), expected, rtol=1e-5, atol=1e-6)

    for model in (classifier(), Transformer(CONFIG, rngs=nnx.Rngs(0))):
        apply_lora(model, rank=2, alpha=4.0, targets=("q_proj",), key=jax.random.key(0))
        with pytest.raises(ValueError, match="a model with LoRA adapters stays stacked"):
            to_layout(model, "per_layer")
        assert not is_per_layer(model)
