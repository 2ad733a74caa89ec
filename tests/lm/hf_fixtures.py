"""Tiny random Hugging Face checkpoints for tests (built with transformers PyTorch classes).

`make_hf_checkpoint(tmp_path, "llama")` writes config.json + safetensors (optionally sharded with
an index) + a word-level `tokenizer.json` / `tokenizer_config.json` with a simple chat template,
exactly what a user's real checkpoint directory looks like. `load_hf_torch_model(path)` loads
it back as the PyTorch reference (eager attention, float32). Needs torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")

WORDS = ("the a cat dog sat on mat ran to home big small red blue is was and then it he she yes no "
         "true false weak strong teacher student label answer question why how what").split()
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0, 1, 2, 3
CHAT_TEMPLATE = ("{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
                 "{% if add_generation_prompt %}<s> assistant {% endif %}")

_BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1,
             eos_token_id=2, pad_token_id=0)

# Nontrivial per-family settings: llama3 RoPE scaling, sliding windows smaller than test sequences,
# head_dim != hidden / heads, biases, soft-capping that bites at these scales.
FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                       high_freq_factor=4.0, original_max_position_embeddings=64)),
    "mistral": dict(sliding_window=4, rope_parameters=dict(rope_type="default", rope_theta=1000.0)),
    "qwen2": dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
    "qwen3": dict(head_dim=16, rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
    "gemma": dict(head_dim=8, hidden_act="gelu_pytorch_tanh"),
    "gemma2": dict(head_dim=8, sliding_window=4, query_pre_attn_scalar=16, attn_logit_softcapping=2.0,
                   final_logit_softcapping=3.0),
}


def _hf_classes(model_type: str):
    import transformers

    names = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma": "Gemma",
             "gemma2": "Gemma2"}[model_type]
    return getattr(transformers, f"{names}Config"), getattr(transformers, f"{names}ForCausalLM")


def write_tokenizer(out_dir: Path) -> None:
    """A word-level tokenizer over WORDS with <pad>/<s>/</s>/<unk> and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", chat_template=CHAT_TEMPLATE)
    fast.save_pretrained(str(out_dir))


def make_hf_checkpoint(tmp_path: str | Path, model_type: str = "llama", *, tie_word_embeddings: bool = False,
                       sharded: bool = False, seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny random `<model_type>ForCausalLM` checkpoint + tokenizer into `tmp_path / name`.

    overrides: extra HF config fields (e.g. `num_hidden_layers=1`). Parameters are the HF init
    plus N(0, 0.1) noise so biases and norm weights are nonzero. Returns the directory.
    """
    import torch

    config_cls, model_cls = _hf_classes(model_type)
    fields = {**_BASE, **FAMILY_CONFIGS[model_type], "tie_word_embeddings": tie_word_embeddings, **overrides}
    config = config_cls(**fields)
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    name = f"{model_type}{'-tied' if tie_word_embeddings else ''}{'-sharded' if sharded else ''}"
    if overrides or seed:  # distinct directories for distinct checkpoints under one tmp_path
        name += "-" + hashlib.sha1(repr((seed, sorted(overrides.items()))).encode()).hexdigest()[:8]
    out_dir = Path(tmp_path) / name
    model.save_pretrained(str(out_dir), max_shard_size="20KB" if sharded else "10GB")
    write_tokenizer(out_dir)
    return out_dir


def load_hf_torch_model(path: str | Path):
    """The PyTorch reference for a checkpoint directory: float32, eager attention, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager").eval()


def left_padded_batch(pads: tuple[int, ...], length: int, *, vocab_high: int, seed: int = 0):
    """A left-padded token batch: row `b` starts with `pads[b]` padding slots (token 0).

    Returns (tokens_BxT, valid_BxT, positions_BxT) as numpy arrays, positions counting from 0 at
    each row's first real token, as transformers' callers pass them.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens_BxT = rng.integers(4, vocab_high, size=(len(pads), length))
    valid_BxT = np.arange(length)[None, :] >= np.asarray(pads)[:, None]
    tokens_BxT[~valid_BxT] = 0
    positions_BxT = np.maximum(np.cumsum(valid_BxT, axis=1) - 1, 0)
    return tokens_BxT, valid_BxT, positions_BxT
