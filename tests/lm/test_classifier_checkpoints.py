"""Sequence classifiers saved by transformers (`<Family>ForSequenceClassification.save_pretrained`:
the decoder under the LM's names, `score.weight` and no LM head) loaded by `load_classifier`, their
logits against the PyTorch model that wrote them; and the causal-LM checkpoints it read before,
read as before, a broken one refused with the same message."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.lm.hf_fixtures import FAMILY_CONFIGS, left_padded_batch, make_hf_checkpoint
from w2s_jax.models import load_classifier, load_pretrained, save_classifier
from w2s_jax.models.safetensors_format import SafetensorsFile, write_safetensors

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")

NAMES = {"llama": "Llama", "qwen2": "Qwen2"}
BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1,
            eos_token_id=2, pad_token_id=0)


def _save_hf_classifier(tmp_path, family, *, num_labels=3, tie=False, sharded=False, seed=0):
    """A tiny random `<Family>ForSequenceClassification` written by `save_pretrained`; returns
    (directory, the torch model). Every parameter gets N(0, 0.1) noise (norms and score nonzero)."""
    import transformers

    config = getattr(transformers, f"{NAMES[family]}Config")(
        **BASE, **FAMILY_CONFIGS[family], tie_word_embeddings=tie, num_labels=num_labels)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{NAMES[family]}ForSequenceClassification")(config).to(torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.score.weight.mul_(30.0)  # logits of O(1) spread across rows and classes
    out = tmp_path / f"{family}-cls{num_labels}{'-tied' if tie else ''}{'-sharded' if sharded else ''}"
    model.save_pretrained(str(out), max_shard_size="20KB" if sharded else "10GB")
    return out, model


def _logits(model, tokens_BxT, valid_BxT, positions_BxT):
    forward = nnx.jit(lambda m, t, p, v: m(t, positions_BxT=p, valid_BxT=v))
    return np.asarray(forward(model, jnp.asarray(tokens_BxT), jnp.asarray(positions_BxT), jnp.asarray(valid_BxT)))


def _torch_logits(reference, tokens_BxT, valid_BxT, positions_BxT):
    with torch.no_grad():
        return reference(input_ids=torch.tensor(tokens_BxT), attention_mask=torch.tensor(valid_BxT.astype(np.int64)),
                         position_ids=torch.tensor(positions_BxT)).logits.numpy()


@pytest.mark.parametrize("family,tie,sharded", [("llama", False, False), ("llama", False, True),
                                                ("qwen2", True, False), ("qwen2", False, True)])
def test_a_transformers_sequence_classifier_loads_with_its_logits(tmp_path, family, tie, sharded):
    path, reference = _save_hf_classifier(tmp_path, family, tie=tie, sharded=sharded)
    names = {n for p in path.glob("*.safetensors") for n in SafetensorsFile(p).names()}
    assert "score.weight" in names and "lm_head.weight" not in names  # what transformers wrote
    assert (path / "model.safetensors.index.json").is_file() == sharded
    architectures = json.loads((path / "config.json").read_text())["architectures"]
    assert architectures == [f"{NAMES[family]}ForSequenceClassification"]

    model = load_classifier(path)
    assert model.num_classes == 3
    np.testing.assert_array_equal(np.asarray(model.score_kernel[...]), reference.score.weight.detach().numpy().T)
    np.testing.assert_array_equal(np.asarray(model.score_bias[...]), 0.0)  # transformers' score has no bias
    assert "lm_head" not in {path[0] for path, _ in nnx.to_flat_state(nnx.state(model.backbone, nnx.Param))}

    batch = left_padded_batch((0, 2, 5, 7), 10, vocab_high=BASE["vocab_size"], seed=1)
    expected = _torch_logits(reference, *batch)
    assert np.ptp(expected) > 1.0  # not a comparison between near-zero numbers
    np.testing.assert_allclose(_logits(model, *batch), expected, atol=1e-4, rtol=0)

    # saved our way (backbone + classifier_head.safetensors) and read back: the same logits
    again = load_classifier(save_classifier(model, tmp_path / "ours"))
    np.testing.assert_allclose(_logits(again, *batch), expected, atol=1e-4, rtol=0)


def test_a_score_weight_that_disagrees_with_the_config_is_named(tmp_path):
    path, _ = _save_hf_classifier(tmp_path, "llama", num_labels=3)
    config = json.loads((path / "config.json").read_text())
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(4)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(4)}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tensor 'score\.weight' in model\.safetensors has shape \(3, 32\), "
                                         r"expected \(4, 32\)"):
        load_classifier(path)


def test_a_classifier_checkpoint_without_its_score_or_a_layer_tensor_is_refused(tmp_path):
    path, _ = _save_hf_classifier(tmp_path, "llama")
    f = SafetensorsFile(path / "model.safetensors")
    dropped = ("score.weight", "model.layers.1.mlp.up_proj.weight")
    kept = [(n, np.array(f.get(n))) for n in f.names() if n not in dropped]
    del f
    write_safetensors(path / "model.safetensors", kept)
    with pytest.raises(ValueError, match=r"missing tensor\(s\) \['model\.layers\.1\.mlp\.up_proj\.weight', "
                                         r"'score\.weight'\]"):
        load_classifier(path)


def test_other_labels_or_a_one_label_score_are_refused(tmp_path):
    path, _ = _save_hf_classifier(tmp_path, "llama", num_labels=3)
    with pytest.raises(ValueError, match=r"score\.weight holds a head of 3 classes, but num_classes=2"):
        load_classifier(path, num_classes=2)
    reward, _ = _save_hf_classifier(tmp_path, "qwen2", num_labels=1)
    with pytest.raises(ValueError, match=r"has 1 label\(s\).*>= 2 classes"):
        load_classifier(reward)


def test_a_classifier_checkpoint_is_not_a_language_model(tmp_path):
    path, _ = _save_hf_classifier(tmp_path, "qwen2", tie=True)
    with pytest.raises(ValueError, match=r"is a sequence classifier \(Qwen2ForSequenceClassification.*"
                                         r"load it with `load_classifier`"):
        load_pretrained(path)


def test_a_causal_lm_checkpoint_loads_as_before_and_a_broken_one_is_refused_alike(tmp_path):
    path = make_hf_checkpoint(tmp_path, "llama")  # untied: lm_head.weight in the file
    model = load_classifier(path)
    lm, _ = load_pretrained(path)
    assert model.num_classes == 2 and not model.config.tie_word_embeddings
    np.testing.assert_array_equal(np.asarray(model.score_kernel[...]), 0.0)
    ours = dict(nnx.to_flat_state(nnx.state(model.backbone, nnx.Param)))
    theirs = dict(nnx.to_flat_state(nnx.state(lm, nnx.Param)))
    assert ours.keys() == theirs.keys() and ("lm_head",) in ours
    for key in ours:
        np.testing.assert_array_equal(np.asarray(ours[key].get_value()), np.asarray(theirs[key].get_value()))

    f = SafetensorsFile(path / "model.safetensors")
    kept = [(n, np.array(f.get(n))) for n in f.names() if n != "lm_head.weight"]
    del f
    write_safetensors(path / "model.safetensors", kept)
    for load in (load_pretrained, load_classifier):
        with pytest.raises(ValueError, match=r"checkpoint .* is missing tensor\(s\) \['lm_head\.weight'\]$"):
            load(path)


def test_a_transformers_classifier_on_a_mesh_and_in_bfloat16(tmp_path):
    """Placed on a tensor-parallel mesh, or read from a bfloat16 checkpoint into bfloat16 weights:
    the logits of the float32 torch model (bfloat16 within its rounding), the head float32."""
    from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh

    path, reference = _save_hf_classifier(tmp_path, "llama")
    batch = left_padded_batch((0, 3, 6), 9, vocab_high=BASE["vocab_size"], seed=2)
    expected = _torch_logits(reference, *batch)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    sharded = load_classifier(path, mesh=mesh, rules=ShardingRules.fsdp_tp(), layout="stacked")
    assert len(sharded.score_kernel[...].sharding.device_set) == 8
    assert not sharded.backbone.layers.attn.q_proj[...].sharding.is_fully_replicated
    np.testing.assert_allclose(_logits(sharded, *batch), expected, atol=1e-4, rtol=0)

    reference.to(torch.bfloat16).save_pretrained(str(tmp_path / "bf16"))
    bf16 = load_classifier(tmp_path / "bf16", dtype=jnp.bfloat16)
    assert bf16.backbone.embedding[...].dtype == jnp.bfloat16 and bf16.score_kernel[...].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(bf16.score_kernel[...]),
                                  reference.score.weight.detach().float().numpy().T)
    np.testing.assert_allclose(_logits(bf16, *batch), expected, atol=0.1 * np.ptp(expected), rtol=0)
