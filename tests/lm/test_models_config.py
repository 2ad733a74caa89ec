"""ModelConfig validation, `config_from_hf` in both config.json layouts, and RoPE frequencies
against transformers' own `ROPE_INIT_FUNCTIONS`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tests.lm.hf_fixtures import FAMILIES
from w2s_jax.models import ModelConfig, config_from_hf, config_to_hf
from w2s_jax.models.rope import inverse_frequencies

LLAMA_V4 = dict(model_type="llama", vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=128, rms_norm_eps=1e-5, rope_theta=500000.0,
                rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                  original_max_position_embeddings=8192),
                max_position_embeddings=131072, bos_token_id=1, eos_token_id=[2, 3], tie_word_embeddings=True)


def _v5(v4: dict) -> dict:
    out = {k: v for k, v in v4.items() if k not in ("rope_theta", "rope_scaling")}
    out["rope_parameters"] = {**v4["rope_scaling"], "rope_theta": v4["rope_theta"]}
    return out


@pytest.mark.parametrize("layout", ["v4", "v5"])
def test_both_rope_layouts_parse_the_same(layout):
    config = config_from_hf(LLAMA_V4 if layout == "v4" else _v5(LLAMA_V4))
    assert (config.rope_type, config.rope_theta, config.rope_factor) == ("llama3", 500000.0, 8.0)
    assert (config.rope_low_freq_factor, config.rope_high_freq_factor) == (1.0, 4.0)
    assert config.rope_original_max_positions == 8192
    assert config.head_dim == 16 and config.num_kv_heads == 2 and config.eos_token_ids == (2, 3)
    assert config.tie_word_embeddings and config.sliding_window is None


def test_legacy_type_key_and_linear_scaling():
    hf = {**LLAMA_V4, "rope_scaling": {"type": "linear", "factor": 2.0}}
    config = config_from_hf(hf)
    assert (config.rope_type, config.rope_factor) == ("linear", 2.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_transformers_configs_parse_with_family_flags(family):
    """Configs written by transformers itself (defaults filled in) parse to the right flags."""
    from tests.lm.hf_fixtures import _BASE, FAMILY_CONFIGS, _hf_classes

    hf = _hf_classes(family)[0](**_BASE, **FAMILY_CONFIGS[family]).to_dict()
    config = config_from_hf(hf)
    assert config.model_type == family
    assert config.qkv_bias == (family == "qwen2") and config.qk_norm == (family == "qwen3")
    assert config.embed_scale == (family in ("gemma", "gemma2"))
    assert (config.norm_style == "gemma") == (family in ("gemma", "gemma2"))
    assert config.sandwich_norms == (family == "gemma2")
    expected_layers = {"mistral": (0, 1), "gemma2": (0,)}.get(family, ())
    assert config.sliding_layers == expected_layers
    assert config.head_dim == hf["head_dim"] if "head_dim" in hf else config.head_dim == 8
    assert config_from_hf(config_to_hf(config)) == config  # export layout parses back


def test_qwen_sliding_layers_follow_max_window_layers():
    hf = dict(model_type="qwen2", vocab_size=10, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
              intermediate_size=8, use_sliding_window=True, sliding_window=3, max_window_layers=2)
    config = config_from_hf(hf)
    assert config.sliding_layers == (2, 3) and config.sliding_window == 3
    assert config_from_hf({**hf, "use_sliding_window": False}).sliding_window is None


@pytest.mark.parametrize("field,value,message", [
    ("model_type", "gpt2", "model_type='gpt2'"),
    ("rope_scaling", {"rope_type": "dynamic", "factor": 2.0}, "rope_type='dynamic'"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 2.0}, "rope_type='yarn'"),
    ("hidden_act", "relu", "hidden_act='relu'"),
    ("pretraining_tp", 2, "pretraining_tp=2"),
    ("use_bidirectional_attention", True, "use_bidirectional_attention"),
])
def test_unsupported_hf_options_raise(field, value, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf({**LLAMA_V4, field: value})


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        config_from_hf(tmp_path)


@pytest.mark.parametrize("text, message", [
    ('{"model_type": "llama",', r"config\.json: not valid JSON \(Expecting"),
    ("[1, 2]", r"config\.json: holds a JSON list, not an object"),
    (json.dumps({k: v for k, v in LLAMA_V4.items() if k != "hidden_size"}),
     r"config\.json: required field 'hidden_size' is missing"),
    (json.dumps({**LLAMA_V4, "num_hidden_layers": "two"}),
     r"config\.json: num_hidden_layers='two' must be a positive integer"),
    (json.dumps({**LLAMA_V4, "num_attention_heads": 0}),
     r"config\.json: num_attention_heads=0 must be a positive integer"),
    (json.dumps({**LLAMA_V4, "rope_scaling": {"rope_type": "linear"}}),
     r"config\.json: required field 'factor' is missing"),
])
def test_broken_config_file_is_named(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        config_from_hf(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)


def test_integral_float_fields_are_accepted():
    assert config_from_hf({**LLAMA_V4, "hidden_size": 64.0}).hidden_size == 64


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_is_valid_and_frozen(family):
    config = ModelConfig.tiny(family)
    assert config.model_type == family and config.num_heads % config.num_kv_heads == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.vocab_size = 3


@pytest.mark.parametrize("overrides,message", [
    (dict(num_heads=3), "num_heads=3"),
    (dict(hidden_size=0), "hidden_size=0"),
    (dict(head_dim=7), "head_dim=7"),
    (dict(rope_type="yarn"), "rope_type='yarn'"),
    (dict(hidden_act="relu"), "hidden_act='relu'"),
    (dict(sliding_layers=(0,)), "sliding_window is None"),
    (dict(sliding_window=4, sliding_layers=(5,)), r"sliding_layers contains \[5\]"),
    (dict(attn_logit_softcap=-1.0), "attn_logit_softcap=-1.0"),
    (dict(model_type="bert"), "model_type='bert'"),
])
def test_invalid_configs_name_the_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.tiny(overrides.pop("model_type", "llama"), **overrides)


@pytest.mark.parametrize("rope", [
    dict(rope_type="default", rope_theta=10000.0),
    dict(rope_type="linear", rope_theta=10000.0, factor=4.0),
    dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
         original_max_position_embeddings=64),
])
def test_inverse_frequencies_match_transformers(rope):
    pytest.importorskip("torch", reason="transformers' rope functions need torch")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = LlamaConfig(vocab_size=10, hidden_size=128, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=8, rope_parameters=dict(rope))
    if rope["rope_type"] == "default":
        theirs = 1.0 / (rope["rope_theta"] ** (np.arange(0, 64, 2, dtype=np.float32) / 64))
    else:
        theirs = ROPE_INIT_FUNCTIONS[rope["rope_type"]](hf)[0].numpy()
    ours = inverse_frequencies(config_from_hf(hf.to_dict()))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)
    if rope["rope_type"] == "llama3":  # all three regimes (kept, smoothed, divided) occur
        plain = 1.0 / (rope["rope_theta"] ** (np.arange(0, 64, 2, dtype=np.float32) / 64))
        ratio = plain / ours
        assert np.isclose(ratio, 1).any() and np.isclose(ratio, 8).any()
        assert ((ratio > 1.01) & (ratio < 7.99)).any()
