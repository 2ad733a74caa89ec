"""A tiny random language model and word-level tokenizer for method and inference tests.

The tokenizer is the one of ``tests/lm/hf_fixtures.py`` (words, ``<pad>/<s>/</s>/<unk>``, a chat
template); the model is a randomly initialised two-layer Llama whose vocabulary is exactly the
tokenizer's, so every generated id decodes. Nothing is downloaded and torch is not needed.
``direct_topk`` is the reference for top-k targets: one unpadded forward pass over prompt +
completion, a float64 softmax over the whole vocabulary, the k largest, renormalised.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tests.lm.hf_fixtures import write_tokenizer
from w2s_jax.inference import Engine
from w2s_jax.models import ModelConfig, Transformer


def tiny_tokenizer(directory: Path):
    """The word-level test tokenizer (with its chat template), saved into and loaded from ``directory``."""
    from transformers import PreTrainedTokenizerFast

    write_tokenizer(directory)
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def tiny_engine(tokenizer, *, seed: int = 0, chat: bool = False, batch_size: int = 4,
                name: str = "tiny") -> Engine:
    """An :class:`Engine` over a random two-layer Llama with the tokenizer's vocabulary."""
    config = ModelConfig.tiny("llama", vocab_size=len(tokenizer))
    model = Transformer(config, rngs=nnx.Rngs(seed))
    return Engine(model, tokenizer, chat=chat, batch_size=batch_size, length_bucket=32, name=name)


@jax.jit
def _logits(graphdef, state, tokens_1xT):
    model = nnx.merge(graphdef, state)
    positions_1xT = jnp.arange(tokens_1xT.shape[1])[None]
    return model(tokens_1xT, positions_BxT=positions_1xT, valid_BxT=jnp.ones_like(tokens_1xT, bool))[0]


def direct_probs(model, ids: list[int]) -> np.ndarray:
    """``p(. | ids[:t+1])`` at every position t of one unpadded sequence (float64, T x V)."""
    z = np.asarray(_logits(*nnx.split(model), jnp.asarray([ids]))[0], np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def direct_topk(engine, prompt, completion: str, k: int):
    """(completion ids, top-k ids, renormalised probabilities, kept mass), computed directly."""
    prompt_ids = engine.encode([prompt])[0]
    completion_ids = engine.tokenizer.encode(completion, add_special_tokens=False)
    probs = direct_probs(engine.model, prompt_ids + completion_ids)
    rows = probs[len(prompt_ids) - 1 : len(prompt_ids) + len(completion_ids) - 1]
    ids = np.argsort(-rows, axis=-1, kind="stable")[:, :k]
    top = np.take_along_axis(rows, ids, axis=-1)
    return completion_ids, ids, top / top.sum(-1, keepdims=True), top.sum(-1)
