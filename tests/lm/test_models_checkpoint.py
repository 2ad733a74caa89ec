"""Checkpoint loading (single, sharded, meshed), export round-trip through transformers, the
tokenizer, and every documented loading error."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.lm.hf_fixtures import CHAT_TEMPLATE, FAMILIES, left_padded_batch, load_hf_torch_model, make_hf_checkpoint
from w2s_jax import parallel
from w2s_jax.models import load_pretrained, load_tokenizer, save_pretrained
from w2s_jax.models.safetensors_format import SafetensorsFile, write_safetensors

torch = pytest.importorskip("torch", reason="building HF checkpoints needs torch")

ATOL = 1e-4


def _batch(vocab_size=40):
    return left_padded_batch((0, 3), 7, vocab_high=vocab_size, seed=1)


def _ours(model):
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    logits, _ = model(jnp.asarray(tokens_BxT), positions_BxT=jnp.asarray(positions_BxT),
                      valid_BxT=jnp.asarray(valid_BxT))
    return np.asarray(logits)[valid_BxT]


def _theirs(path):
    tokens_BxT, valid_BxT, positions_BxT = _batch()
    with torch.no_grad():
        logits = load_hf_torch_model(path)(input_ids=torch.tensor(tokens_BxT),
                                           attention_mask=torch.tensor(valid_BxT.astype(np.int64)),
                                           position_ids=torch.tensor(positions_BxT)).logits.numpy()
    return logits[valid_BxT]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf"), "llama")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_sharded_checkpoint_loads(tmp_path, llama_dir):
    path = make_hf_checkpoint(tmp_path, "llama", sharded=True)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really several shard files
    model, _ = load_pretrained(path)
    single, _ = load_pretrained(llama_dir)  # same seed, same weights
    np.testing.assert_array_equal(_ours(model), _ours(single))
    np.testing.assert_allclose(_ours(model), _theirs(path), atol=ATOL, rtol=0)


@pytest.mark.parametrize("family,tied", [(f, False) for f in FAMILIES] + [("llama", True), ("gemma2", True)])
def test_export_round_trip_through_transformers(tmp_path, family, tied):
    """Our export loads in transformers PyTorch and gives our logits; reloading it gives ours too."""
    model, config = load_pretrained(make_hf_checkpoint(tmp_path, family, tie_word_embeddings=tied))
    out = save_pretrained(model, config, tmp_path / "export")
    np.testing.assert_allclose(_theirs(out), _ours(model), atol=ATOL, rtol=0)
    reloaded, reloaded_config = load_pretrained(out)
    assert reloaded_config == config
    np.testing.assert_array_equal(_ours(reloaded), _ours(model))


def test_export_keeps_bfloat16(tmp_path, llama_dir):
    model, config = load_pretrained(llama_dir, dtype=jnp.bfloat16)
    out = save_pretrained(model, config, tmp_path / "export")
    names = SafetensorsFile(out / "model.safetensors")
    assert {str(names.get(n).dtype) for n in names.names()} == {"bfloat16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded, _ = load_pretrained(out, dtype=jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(reloaded.embedding[...]), np.asarray(model.embedding[...]))


def test_mesh_loading_shards_each_parameter(llama_dir):
    assert len(jax.devices()) == 8
    mesh = parallel.make_mesh(parallel.MeshConfig(data=1, fsdp=4, tp=2))
    rules = parallel.ShardingRules.fsdp_tp()
    model, _ = load_pretrained(llama_dir, mesh=mesh, rules=rules, layout="stacked")
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    for path, variable in flat:
        expected = parallel.logical_to_sharding(variable.get_metadata()["logical_axes"], mesh, rules,
                                                shape=variable.get_value().shape)
        assert variable.get_value().sharding.is_equivalent_to(expected, variable.get_value().ndim), path
    q = dict(flat)[("layers", "attn", "q_proj")].get_value()  # stacked: L x D x N x H
    assert len({str(s.index) for s in q.addressable_shards}) > 1  # really split, not replicated
    unsharded, _ = load_pretrained(llama_dir)
    np.testing.assert_allclose(_ours(model), _ours(unsharded), atol=1e-5, rtol=0)


def test_tokenizer_and_chat_template(llama_dir):
    tokenizer = load_tokenizer(llama_dir)
    ids = tokenizer("the cat sat on the mat", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "the cat sat on the mat"
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 2
    assert tokenizer.chat_template == CHAT_TEMPLATE
    text = tokenizer.apply_chat_template([{"role": "user", "content": "why"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<s> user why </s> <s> assistant "


# --- errors -----------------------------------------------------------------------------------


def test_missing_shard_file_is_named(tmp_path):
    path = make_hf_checkpoint(tmp_path, "llama", sharded=True)
    shard = sorted(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values())[-1]
    (path / shard).unlink()
    with pytest.raises(FileNotFoundError, match=shard):
        load_pretrained(path)


def test_wrong_shape_names_tensor_and_shapes(tmp_path, llama_dir):
    path = _copy(llama_dir, tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 48
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"mlp\.\w+_proj\.weight.*shape \(\d+, \d+\).*expected \(\d+, \d+\)"):
        load_pretrained(path)


def _rewrite_weights(path, edit):
    f = SafetensorsFile(path / "model.safetensors")
    tensors = [(n, np.array(f.get(n))) for n in f.names()]
    del f
    write_safetensors(path / "model.safetensors", edit(tensors))


def test_missing_tensor_is_named(tmp_path, llama_dir):
    path = _copy(llama_dir, tmp_path / "ckpt")
    _rewrite_weights(path, lambda ts: [(n, a) for n, a in ts if n != "model.layers.1.mlp.up_proj.weight"])
    with pytest.raises(ValueError, match=r"missing tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
        load_pretrained(path)


def test_unexpected_tensor_is_named(tmp_path, llama_dir):
    path = _copy(llama_dir, tmp_path / "ckpt")
    _rewrite_weights(path, lambda ts: ts + [("model.extra.weight", np.zeros(3, np.float32))])
    with pytest.raises(ValueError, match=r"unexpected tensor.*model\.extra\.weight"):
        load_pretrained(path)


def test_pickled_weights_are_refused(tmp_path, llama_dir):
    path = tmp_path / "bin_only"
    path.mkdir()
    shutil.copy(llama_dir / "config.json", path / "config.json")
    (path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match="safetensors"):
        load_pretrained(path)


def test_missing_config_json(tmp_path, llama_dir):
    path = _copy(llama_dir, tmp_path / "ckpt")
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(path)


@pytest.mark.parametrize("field,value,message", [
    ("model_type", "gpt2", "model_type='gpt2'"),
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}, "rope_type='yarn'"),
    ("hidden_act", "relu", "hidden_act='relu'"),
])
def test_unsupported_config_is_refused_at_load(tmp_path, llama_dir, field, value, message):
    path = _copy(llama_dir, tmp_path / "ckpt")
    config = json.loads((path / "config.json").read_text())
    config[field] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_pretrained(path)


def test_missing_local_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained(tmp_path / "nope")
