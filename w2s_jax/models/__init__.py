"""Flax NNX decoder-only language models matching Hugging Face transformers (Llama, Mistral, Qwen2,
Qwen3, Gemma, Gemma 2), with safetensors loading/export and the tokenizer loader."""

from w2s_jax.models.checkpoint import load_pretrained, save_pretrained
from w2s_jax.models.config import ModelConfig, config_from_hf, config_to_hf
from w2s_jax.models.tokenizer import load_tokenizer
from w2s_jax.models.transformer import KVCache, Transformer, init_cache

__all__ = ["KVCache", "ModelConfig", "Transformer", "config_from_hf", "config_to_hf", "init_cache",
           "load_pretrained", "load_tokenizer", "save_pretrained"]
