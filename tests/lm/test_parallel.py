"""Sharding as data on 8 fake CPU devices: meshes, the rules table, and sharded == unsharded.

Tolerances: a sharded float32 computation reorders sums (partial sums per shard, then an
all-reduce), so results agree to float32 rounding of O(1) values, well inside 1e-5.
"""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from w2s_jax.models import ModelConfig, Transformer
from w2s_jax.parallel import (
    MeshConfig,
    ShardingRules,
    initialize_distributed,
    logical_to_sharding,
    make_mesh,
    shard_batch,
    shard_model,
)
from w2s_jax.train import (
    Checkpointer,
    CrossEntropyToTokens,
    SFTDataset,
    TrainConfig,
    make_optimizer,
    make_train_step,
    train,
)

CONFIG = ModelConfig.tiny(num_layers=1)  # D=32, N=4, K=2, H=8, F=64, V=128


def _model(seed=0, config=CONFIG):
    return Transformer(config, rngs=nnx.Rngs(seed))


def _batch(rows=8, T=12, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, CONFIG.vocab_size, (rows, T)).astype(np.int32)
    pad = rng.integers(0, 4, rows)  # left padding lengths
    valid = np.arange(T)[None, :] >= pad[:, None]
    tokens = np.where(valid, tokens, 0).astype(np.int32)
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
    completion = valid & (np.arange(T)[None, :] >= T - 4)
    return {"tokens_BxT": tokens, "positions_BxT": positions, "valid_BxT": valid,
            "completion_mask_BxT": completion}


def _placed_as(array, mesh, spec) -> bool:
    """True when `array` is laid out like `spec` on `mesh` (trailing Nones are insignificant)."""
    return array.sharding.is_equivalent_to(NamedSharding(mesh, spec), array.ndim)


@nnx.jit
def _forward(model, batch):
    logits, _ = model(batch["tokens_BxT"], positions_BxT=batch["positions_BxT"],
                      valid_BxT=batch["valid_BxT"])
    return logits


def test_mesh_config_resolves_wildcard_and_rejects_bad_sizes():
    assert MeshConfig(data=2, fsdp=-1, tp=2).resolve(8) == (2, 2, 2)
    assert MeshConfig().resolve(8) == (1, 8, 1)
    with pytest.raises(ValueError, match="at most one"):
        MeshConfig(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="MeshConfig.tp"):
        MeshConfig(tp=0)
    with pytest.raises(ValueError, match="needs 12 devices"):
        MeshConfig(data=3, fsdp=4, tp=1).resolve(8)
    with pytest.raises(ValueError, match="not divisible"):
        MeshConfig(data=3).resolve(8)


def test_make_mesh_axis_names_and_sizes():
    mesh = make_mesh(MeshConfig(data=2, fsdp=-1, tp=2))
    assert mesh.axis_names == ("data", "fsdp", "tp")
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tp": 2}
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_logical_to_sharding_is_noop_without_mesh():
    assert logical_to_sharding(("embed", "mlp"), None, ShardingRules.fsdp_tp()) is None


def test_rules_table():
    mesh = make_mesh(MeshConfig(fsdp=4, tp=2))
    rules = ShardingRules.fsdp_tp()
    spec = lambda axes, shape: logical_to_sharding(axes, mesh, rules, shape=shape).spec  # noqa: E731
    assert spec(("vocab", "embed"), (128, 32)) == P("tp", "fsdp")
    assert spec(("embed", "heads", "head_dim"), (32, 4, 8)) == P("fsdp", "tp", None)
    assert spec((None,), (32,)) == P(None)
    # 30 is not divisible by fsdp=4 and 1 kv head not by tp=2: fsdp falls back to the largest
    # divisible free axis (head_dim 8), tp is dropped.
    assert spec(("embed", "kv_heads", "head_dim"), (30, 1, 8)) == P(None, None, "fsdp")
    # one mesh axis is never used twice in a spec
    both = ShardingRules(embed="fsdp", mlp="fsdp")
    assert logical_to_sharding(("mlp", "embed"), mesh, both, shape=(64, 32)).spec == P("fsdp", None)
    # several mesh axes on one logical axis
    wide = ShardingRules(embed=("fsdp", "tp"))
    assert logical_to_sharding(("embed", None), mesh, wide, shape=(32, 3)).spec == P(("fsdp", "tp"), None)
    with pytest.raises(ValueError, match="'model' is not a mesh axis"):
        ShardingRules(embed="model")
    with pytest.raises(ValueError, match="unknown logical axis 'width'"):
        logical_to_sharding(("width",), mesh, rules)


def test_shard_model_places_transformer_params_per_rules():
    mesh = make_mesh(MeshConfig(fsdp=4, tp=2))
    model = _model()
    shard_model(model, mesh, ShardingRules.fsdp_tp())
    attn, mlp = model.layers.attn, model.layers.mlp  # stacked: the layer axis is never split
    expected = {
        "embedding": (model.embedding, P("tp", "fsdp")),
        "lm_head": (model.lm_head, P("fsdp", "tp")),
        "q_proj": (attn.q_proj, P(None, "fsdp", "tp", None)),
        "k_proj": (attn.k_proj, P(None, "fsdp", "tp", None)),
        "o_proj": (attn.o_proj, P(None, "tp", None, "fsdp")),
        "gate_proj": (mlp.gate_proj, P(None, "fsdp", "tp")),
        "down_proj": (mlp.down_proj, P(None, "tp", "fsdp")),
        "input_norm": (model.layers.input_norm.weight, P(None, None)),
        "final_norm": (model.final_norm.weight, P(None)),
    }
    for name, (param, spec) in expected.items():
        sharding = param.get_value().sharding
        assert sharding.mesh.shape == mesh.shape, name
        assert sharding.spec == spec, f"{name}: {sharding.spec} != {spec}"
    # pure FSDP over all 8 devices: only the width axis is split
    fsdp_mesh = make_mesh(MeshConfig(fsdp=8))
    model = _model()
    shard_model(model, fsdp_mesh, ShardingRules.fsdp())
    assert model.embedding.get_value().sharding.spec == P(None, "fsdp")
    assert model.layers.mlp.down_proj.get_value().sharding.spec == P(None, None, "fsdp")
    assert len(model.layers.mlp.down_proj.get_value().addressable_shards) == 8


def test_shard_batch_splits_rows_over_data_and_fsdp():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    batch = shard_batch(_batch(), mesh)
    tokens = batch["tokens_BxT"]
    assert tokens.sharding.spec == P(("data", "fsdp"), None)
    assert tokens.addressable_shards[0].data.shape == (2, 12)
    np.testing.assert_array_equal(np.asarray(tokens), _batch()["tokens_BxT"])
    host = _batch()
    unplaced = shard_batch(host, None)  # no mesh: a no-op, the very same host arrays back
    assert unplaced.keys() == host.keys()
    for name, array in host.items():
        assert unplaced[name] is array, name
        np.testing.assert_array_equal(unplaced[name], _batch()[name])
    with pytest.raises(ValueError, match="not divisible by data\\*fsdp = 4"):
        shard_batch({"x": np.zeros((6, 2))}, mesh)


def test_sharded_forward_equals_unsharded():
    batch = _batch()
    reference = np.asarray(_forward(_model(), batch))
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    model = _model()
    shard_model(model, mesh, ShardingRules.fsdp_tp())
    sharded = _forward(model, shard_batch(batch, mesh))
    np.testing.assert_allclose(np.asarray(sharded), reference, atol=1e-5, rtol=0)


def test_load_pretrained_with_mesh_matches_unsharded(tmp_path):
    pytest.importorskip("torch", reason="the tiny HF checkpoint is written with transformers PyTorch")
    from tests.lm.hf_fixtures import make_hf_checkpoint
    from w2s_jax.models import load_pretrained

    path = make_hf_checkpoint(tmp_path, "qwen2")
    mesh = make_mesh(MeshConfig(fsdp=4, tp=2))
    sharded, config = load_pretrained(path, mesh=mesh, rules=ShardingRules.fsdp_tp(), layout="stacked")
    plain, _ = load_pretrained(path)
    q = sharded.layers.attn.q_proj.get_value()  # stacked: L x D x N x H
    assert q.sharding.spec == P(None, "fsdp", "tp", None)
    rng = np.random.default_rng(1)
    tokens = rng.integers(4, config.vocab_size, (8, 10)).astype(np.int32)
    valid = np.ones((8, 10), bool)
    positions = np.broadcast_to(np.arange(10, dtype=np.int32), (8, 10))
    batch = {"tokens_BxT": tokens, "positions_BxT": positions, "valid_BxT": valid}
    np.testing.assert_allclose(np.asarray(_forward(sharded, shard_batch(batch, mesh))),
                               np.asarray(_forward(plain, batch)), atol=1e-5, rtol=0)


def _two_steps(mesh, rules, model_config=CONFIG):
    config = TrainConfig.tiny()
    model = _model(config=model_config)
    shard_model(model, mesh, rules)
    optimizer = make_optimizer(model, config)
    shard_model(optimizer, mesh, rules)
    step = make_train_step(CrossEntropyToTokens(), config, mesh=mesh, rules=rules)
    losses = [float(step(model, optimizer, shard_batch(_batch(seed=s), mesh))["loss"]) for s in (0, 1)]
    return model, optimizer, losses


def test_sharded_train_step_equals_unsharded():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    plain, _, plain_losses = _two_steps(None, None)
    sharded, optimizer, sharded_losses = _two_steps(mesh, ShardingRules.fsdp_tp())
    np.testing.assert_allclose(sharded_losses, plain_losses, atol=1e-5, rtol=0)
    plain_params = jax.tree.leaves(nnx.state(plain, nnx.Param))
    sharded_params = jax.tree.leaves(nnx.state(sharded, nnx.Param))
    for a, b in zip(plain_params, sharded_params, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=0)
    # parameters and the Adam moments stay sharded per the rules after the update
    assert _placed_as(sharded.layers.attn.q_proj.get_value(), mesh, P(None, "fsdp", "tp"))
    assert _placed_as(sharded.layers.mlp.down_proj.get_value(), mesh, P(None, "tp", "fsdp"))
    moments = [leaf for leaf in jax.tree.leaves(nnx.state(optimizer))
               if isinstance(leaf, jax.Array) and leaf.shape == (1, 32, 4, 8)]
    assert len(moments) == 2  # Adam's (mu, nu) of the (stacked, one-layer) q_proj
    assert all(_placed_as(m, mesh, P(None, "fsdp", "tp")) for m in moments)


def test_sharded_train_step_with_tied_head_equals_unsharded():
    """The tied LM head has a hand-written VJP (layers.dense_transposed): sharded = unsharded."""
    tied = dataclasses.replace(CONFIG, tie_word_embeddings=True)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    plain, _, plain_losses = _two_steps(None, None, tied)
    sharded, _, sharded_losses = _two_steps(mesh, ShardingRules.fsdp_tp(), tied)
    assert not hasattr(sharded, "lm_head")
    np.testing.assert_allclose(sharded_losses, plain_losses, atol=1e-5, rtol=0)
    for a, b in zip(jax.tree.leaves(nnx.state(plain, nnx.Param)), jax.tree.leaves(nnx.state(sharded, nnx.Param)),
                    strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=0)


def test_greedy_decode_under_mesh_equals_unsharded():
    from w2s_jax.inference import Greedy, generate

    prompts = [[1, 5, 9, 13], [1, 7, 8], [1, 20, 21, 22, 23], [1, 4]] * 2
    reference = generate(_model(), None, prompts, max_new_tokens=4, sampler=Greedy())
    mesh = make_mesh(MeshConfig(fsdp=4, tp=2))
    model = _model()
    shard_model(model, mesh, ShardingRules.fsdp_tp())
    sharded = generate(model, None, prompts, max_new_tokens=4, sampler=Greedy())
    assert sharded.token_ids == reference.token_ids
    assert all(len(ids) > 0 for ids in reference.token_ids)


def test_shard_model_without_mesh_and_distributed_flag_are_noops(monkeypatch):
    model = _model()
    before = model.embedding.get_value()
    shard_model(model, None, ShardingRules.fsdp_tp())
    assert model.embedding.get_value() is before
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda: calls.append(True))
    initialize_distributed(False)
    assert calls == []
    initialize_distributed(True)
    assert calls == [True]


class _Killed(Exception):
    pass


def test_sharded_run_checkpoints_and_resumes_onto_the_mesh(tmp_path):
    from tests.lm.test_train_data import CharTokenizer

    rows = [{"prompt": f"q{i}", "completion": "ab"[i % 2]} for i in range(8)]
    data = SFTDataset(rows, CharTokenizer(), max_len=8)
    config = TrainConfig(learning_rate=1e-2, warmup_steps=1, total_steps=4, batch_size=8, max_len=8,
                         checkpoint_every=2)
    mesh, rules = make_mesh(MeshConfig(data=2, fsdp=2, tp=2)), ShardingRules.fsdp_tp()
    reference = _model()
    train(reference, data, config=config, mesh=mesh, rules=rules, show_progress=False)

    def kill(step, metrics):
        if step == 3:
            raise _Killed

    with pytest.raises(_Killed):
        train(_model(), data, config=config, mesh=mesh, rules=rules, checkpoint_dir=tmp_path,
              callbacks=[kill], show_progress=False)
    assert Checkpointer(tmp_path).all_steps() == [2]
    resumed = _model()
    train(resumed, data, config=config, mesh=mesh, rules=rules, checkpoint_dir=tmp_path,
          show_progress=False)
    assert _placed_as(resumed.layers.attn.q_proj.get_value(), mesh, P(None, "fsdp", "tp"))
    for a, b in zip(jax.tree.leaves(nnx.state(reference, nnx.Param)),
                    jax.tree.leaves(nnx.state(resumed, nnx.Param)), strict=True):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_tensor_parallelism_beyond_the_kv_heads_warns():
    """tp=4 over a model with 2 kv heads replicates the key/value projections: a warning names
    it, from `shard_model` (and `load_pretrained(mesh=)`); tp=2 divides both head counts, silently."""
    import warnings

    config = ModelConfig.tiny("llama")  # 4 query heads, 2 kv heads
    model = Transformer(config, rngs=nnx.Rngs(0))
    with pytest.warns(UserWarning, match=r"the 2 kv/heads do not divide over 4 devices \(tp\)"):
        shard_model(model, make_mesh(MeshConfig(fsdp=2, tp=4)), ShardingRules.fsdp_tp())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shard_model(Transformer(config, rngs=nnx.Rngs(0)), make_mesh(MeshConfig(fsdp=4, tp=2)),
                    ShardingRules.fsdp_tp())
