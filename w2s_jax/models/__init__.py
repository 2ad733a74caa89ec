"""Flax NNX decoder-only language models matching Hugging Face transformers (Llama, Mistral, Qwen2,
Qwen3, Gemma, Gemma 2), with safetensors loading/export and the tokenizer loader.

Names are imported on first use, so that `w2s_jax.models.tokenizer` or `w2s_jax.models.config`
can be used without importing JAX and Flax (a command line checks its inputs before paying that).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_MODULE_OF = {
    "KVCache": "kv_cache", "Transformer": "transformer", "init_cache": "kv_cache",
    "ModelConfig": "config", "config_from_hf": "config", "config_to_hf": "config",
    "load_pretrained": "checkpoint", "save_pretrained": "checkpoint",
    "load_tokenizer": "tokenizer", "to_layout": "layer_weights", "set_backend": "backend",
    "Classifier": "classifier", "load_classifier": "classifier", "save_classifier": "classifier",
}

__all__ = ["Classifier", "KVCache", "ModelConfig", "Transformer", "config_from_hf", "config_to_hf", "init_cache",
           "load_classifier", "load_pretrained", "load_tokenizer", "save_classifier", "save_pretrained",
           "set_backend", "to_layout"]
assert sorted(_MODULE_OF) == __all__  # one list of names: the lazy table and the exports agree

if TYPE_CHECKING:
    from w2s_jax.models.checkpoint import load_pretrained, save_pretrained
    from w2s_jax.models.classifier import Classifier, load_classifier, save_classifier
    from w2s_jax.models.config import ModelConfig, config_from_hf, config_to_hf
    from w2s_jax.models.tokenizer import load_tokenizer
    from w2s_jax.models.kv_cache import KVCache, init_cache
    from w2s_jax.models.backend import set_backend
    from w2s_jax.models.layer_weights import to_layout
    from w2s_jax.models.transformer import Transformer


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
