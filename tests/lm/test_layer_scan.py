"""The stacked layers: one parameter per weight with a leading layer axis, rematerialisation that
changes no gradient, a layer view equal to its slice, and a layer axis that is never sharded."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax.models import ModelConfig, Transformer
from w2s_jax.parallel import ShardingRules

CONFIG = dataclasses.replace(ModelConfig.tiny("gemma2", num_layers=3), sliding_window=3, sliding_layers=(0, 2))


def _grads(remat):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0), remat=remat)
    graphdef, params = nnx.split(model)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 7)), jnp.int32)

    def loss(params):
        logits, _ = nnx.merge(graphdef, params)(tokens, positions_BxT=jnp.broadcast_to(jnp.arange(7), (2, 7)),
                                                valid_BxT=jnp.ones((2, 7), bool))
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

    return jax.tree.leaves(jax.jit(jax.grad(loss))(params))


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_changes_no_gradient(remat):
    plain = _grads(None)
    for a, b in zip(_grads(remat), plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert max(float(jnp.abs(g).max()) for g in plain) > 1e-3


def test_parameters_are_stacked_and_a_layer_view_is_its_slice():
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    q = model.layers.attn.q_proj
    assert q.get_value().shape == (3, CONFIG.hidden_size, CONFIG.num_heads, CONFIG.head_dim)
    assert q.get_metadata()["logical_axes"] == ("layers", "embed", "heads", "head_dim")
    assert model.layers.input_norm.weight.get_metadata()["logical_axes"] == ("layers", None)
    np.testing.assert_array_equal(model.layers[2].attn.q_proj.get_value(), q.get_value()[2])
    # each layer was initialised with its own keys, as separate layers are
    assert not np.allclose(q.get_value()[0], q.get_value()[1])


def test_unknown_remat_policy_and_a_sharded_layer_axis_are_refused():
    with pytest.raises(ValueError, match="remat='some' is not a policy"):
        Transformer(CONFIG, rngs=nnx.Rngs(0), remat="some")
    with pytest.raises(ValueError, match="layer axis is never sharded"):
        ShardingRules(layers="fsdp")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_take_layer_is_the_slice_in_value_and_gradient(dtype):
    from w2s_jax.models.transformer import take_layer

    stacked = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 5)), dtype)
    weights = jnp.arange(15.0, dtype=dtype).reshape(3, 5)
    np.testing.assert_array_equal(take_layer(stacked, jnp.asarray(2)), stacked[2])
    grad = jax.grad(lambda w: jnp.sum(take_layer(w, jnp.asarray(1)) * weights).astype(jnp.float32))(stacked)
    expected = jax.grad(lambda w: jnp.sum(w[1] * weights).astype(jnp.float32))(stacked)
    assert grad.dtype == dtype
    np.testing.assert_array_equal(grad, expected)
    # inside a scan a bf16 stack is not copied whole (converted, or as bits) before the loop
    if dtype == jnp.bfloat16:
        big = jnp.ones((8, 256, 256), dtype)

        def scan(big, take):
            return jax.lax.scan(lambda x, i: ((x @ take(big, i)).astype(dtype), None), jnp.ones((2, 256), dtype),
                                jnp.arange(8))[0]

        def scratch(take):
            return jax.jit(scan, static_argnums=1).lower(big, take).compile().memory_analysis().temp_size_in_bytes

        assert scratch(take_layer) < big.nbytes / 2
        assert scratch(lambda w, i: jax.lax.dynamic_index_in_dim(w, i, keepdims=False)) >= big.nbytes


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_embedding_rows_are_the_gather_in_value_and_gradient(dtype):
    from w2s_jax.models.transformer import embedding_rows

    table = jnp.asarray(np.random.default_rng(0).normal(size=(9, 4)), dtype)
    tokens = jnp.asarray([[1, 7, 1], [0, 8, 3]])
    weights = jnp.arange(24.0, dtype=dtype).reshape(2, 3, 4)
    np.testing.assert_array_equal(embedding_rows(table, tokens), table[tokens])
    grad = jax.grad(lambda t: jnp.sum(embedding_rows(t, tokens) * weights).astype(jnp.float32))(table)
    expected = jax.grad(lambda t: jnp.sum(t[tokens] * weights).astype(jnp.float32))(table)
    assert grad.dtype == dtype
    np.testing.assert_array_equal(grad, expected)  # token 1 twice: its rows' gradients add up

    def loop(table, gather):  # a decode loop's shape: one gather per step from the same table
        return jax.lax.fori_loop(0, 5, lambda i, acc: acc + gather(table, jnp.full((1, 4), i)).astype(
            jnp.float32).sum(), 0.0)

    def scratch(gather):
        big = jnp.ones((4096, 64), dtype)
        return jax.jit(loop, static_argnums=1).lower(big, gather).compile().memory_analysis().temp_size_in_bytes

    # no copy of the table per call: a plain bf16 gather in a loop had one (4096 x 64: 1 MiB)
    assert scratch(embedding_rows) < 4096 * 64 * 2 / 4
    if dtype == jnp.bfloat16:
        assert scratch(lambda t, k: jnp.take(t, k, axis=0)) >= 4096 * 64 * 2
