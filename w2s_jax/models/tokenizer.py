"""Tokenizer loading: a `transformers` fast tokenizer with its chat template, no remote code."""

from __future__ import annotations

from pathlib import Path


def load_tokenizer(path_or_hub_name: str | Path):
    """`transformers.AutoTokenizer` for a checkpoint directory or Hub name (never trusts remote code).

    The chat template comes from `tokenizer_config.json` (or `chat_template.jinja`) when present.
    """
    from transformers import AutoTokenizer

    from w2s_jax.models.checkpoint import resolve_checkpoint_dir

    ckpt_dir = resolve_checkpoint_dir(path_or_hub_name)
    return AutoTokenizer.from_pretrained(str(ckpt_dir), trust_remote_code=False)
