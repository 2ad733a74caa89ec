"""The residual stream is pinned to its sharding on a mesh (`Transformer.residual`: rows over
("data", "fsdp"), the width whole), in training and in prefill, and nowhere without a mesh.

Read from the programs lowered for "cuda" and "tpu" from this host (8 fake CPU devices as the
mesh): each `B x T x D` residual (the embedding's output, and each layer's in the scan body)
carries an `sdy.sharding_constraint`. Without a mesh the same programs hold no constraint at all
(`benchmarks/program_hashes.py` shows the CPU's programs byte-identical to before). That the
values are unchanged on a mesh is `test_parallel.py`'s (sharded == unsharded train steps and
decoding).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax.inference import Greedy, generation
from w2s_jax.inference.prefill import CacheSpec
from w2s_jax.models import ModelConfig, Transformer
from w2s_jax.models.backend import GPU, TPU
from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh, shard_batch, shard_model

CONFIG = ModelConfig.tiny(num_layers=3, eos_token_ids=(2,))  # D=32, L=3
B, T = 8, 16
PLATFORMS = [("cuda", GPU), ("tpu", TPU)]


def _model(backend, mesh, rules):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0), backend=backend)
    shard_model(model, mesh, rules)
    model.backend = backend  # the accelerator's program, lowered from the CPU host
    return model


def _residual_constraints(text: str, rows: int, length: int) -> list[str]:
    """The sharding constraints on `rows x length x D` float arrays, with their shardings."""
    shape = rf"tensor<{rows}x{length}x{CONFIG.hidden_size}xf32>"
    return re.findall(rf"sdy\.sharding_constraint %\S+ (<@\S+, \[.*?\]>) : {shape}", text)


def _train_text(model, platform, mesh):
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    batch = {"tokens_BxT": rng.integers(3, CONFIG.vocab_size, (B, T)).astype(np.int32),
             "positions_BxT": np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)),
             "valid_BxT": np.ones((B, T), bool)}
    batch = shard_batch(batch, mesh)

    def loss(state):
        logits, _ = nnx.merge(graphdef, state)(batch["tokens_BxT"], positions_BxT=batch["positions_BxT"],
                                               valid_BxT=batch["valid_BxT"])
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

    return jax.jit(jax.grad(loss)).trace(state).lower(lowering_platforms=(platform,)).as_text()


def _prefill_text(model, platform, mesh):
    graphdef, state = nnx.split(model)
    rows = shard_batch({"tokens_BxS": np.ones((B, 2 * T), np.int32), "valid_BxS": np.ones((B, 2 * T), bool),
                        "active_B": np.ones(B, bool), "example_index_B": np.arange(B, dtype=np.int32)}, mesh)
    traced = generation._prefill.trace(
        graphdef, state, rows["tokens_BxS"], rows["valid_BxS"], None, rows["active_B"], jax.random.key(0),
        rows["example_index_B"], sampler=Greedy(), eos_ids=(2,), num_new=16, chunk=T,
        cache_spec=CacheSpec(CONFIG, B, 2 * T, jnp.dtype(jnp.float32), mesh))
    return traced.lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("platform,backend", PLATFORMS)
@pytest.mark.parametrize("rules", [ShardingRules.fsdp(), ShardingRules.fsdp_tp()], ids=["fsdp", "fsdp_tp"])
def test_training_and_prefill_pin_the_residual_rows_on_a_mesh(platform, backend, rules):
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    model = _model(backend, mesh, rules)
    for text in (_train_text(model, platform, mesh), _prefill_text(model, platform, mesh)):
        pinned = _residual_constraints(text, B, T)
        # the embedding's output and the scan body's residual (one body whatever the depth);
        # the gradient adds the cotangents' constraints
        assert len(pinned) >= 2, pinned
        assert set(pinned) == {'<@mesh, [{"data", "fsdp"}, {}, {}]>'}, set(pinned)


@pytest.mark.parametrize("platform,backend", PLATFORMS)
def test_without_a_mesh_nothing_is_constrained(platform, backend):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0), backend=backend)
    for text in (_train_text(model, platform, None), _prefill_text(model, platform, None)):
        assert "sharding_constraint" not in text
    # the model placed on a mesh, then back on one device: its programs lose the constraints again
    mesh = make_mesh(MeshConfig(fsdp=8))
    model.placed_on(mesh)
    assert _residual_constraints(_train_text(model, platform, mesh), B, T)
    model.placed_on(None)
    assert model.placement is None
