"""A tiny random language model and word-level tokenizer for method and inference tests.

The tokenizer is the one of ``tests/lm/hf_fixtures.py`` (words, ``<pad>/<s>/</s>/<unk>``, a chat
template); the model is a randomly initialised two-layer Llama whose vocabulary is exactly the
tokenizer's, so every generated id decodes. Nothing is downloaded and torch is not needed.
"""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from tests.lm.hf_fixtures import write_tokenizer
from w2s_jax.inference import Engine
from w2s_jax.models import ModelConfig, Transformer


def tiny_tokenizer(directory: Path):
    """The word-level test tokenizer (with its chat template), saved into and loaded from ``directory``."""
    from transformers import PreTrainedTokenizerFast

    write_tokenizer(directory)
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def tiny_engine(tokenizer, *, seed: int = 0, chat: bool = False, name: str = "tiny") -> Engine:
    """An :class:`Engine` over a random two-layer Llama with the tokenizer's vocabulary."""
    config = ModelConfig.tiny("llama", vocab_size=len(tokenizer))
    model = Transformer(config, rngs=nnx.Rngs(seed))
    return Engine(model, tokenizer, chat=chat, batch_size=4, length_bucket=32, name=name)
