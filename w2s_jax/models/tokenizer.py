"""Tokenizer loading: a `transformers` fast tokenizer with its chat template, no remote code.

A checkpoint's own tokenizer is used as saved. When `tokenizer_config.json` names the generic
fast-tokenizer class (`PreTrainedTokenizerFast`, or `TokenizersBackend` as transformers 5 writes
it) and `tokenizer.json` exists, that file is loaded as it is, with the special tokens and chat
template of the config. `AutoTokenizer` would instead take the tokenizer class of the model family
named in `config.json` (in transformers 5, `Qwen2Tokenizer` for a Qwen2 model), which builds its
own pre-tokenizer around the saved vocabulary and can encode a custom tokenizer's text to no
tokens at all. Skipping `AutoTokenizer` there also skips its model-config machinery, which imports
PyTorch when it is installed (over a second of a command's start-up). Other checkpoints (a family
tokenizer class, or only `tokenizer.model` / `vocab.*` files) go through `AutoTokenizer`.
"""

from __future__ import annotations

import json
from pathlib import Path

from w2s_jax.models.hub import resolve_checkpoint_dir

# Files any transformers tokenizer is built from; a directory with none of them has no tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                   "vocab.txt", "spiece.model")
_GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def load_tokenizer(path_or_hub_name: str | Path):
    """The tokenizer of a checkpoint directory or Hub name (never trusts remote code).

    The chat template comes from `tokenizer_config.json` (or `chat_template.jinja`) when present.

    Arguments:
      path_or_hub_name: a checkpoint directory, or a Hub name (its tokenizer files are downloaded).
    Returns:
      a `transformers` tokenizer: `PreTrainedTokenizerFast` on the checkpoint's `tokenizer.json`
      when `tokenizer_config.json` names that generic class, else what `AutoTokenizer` picks.
    Raises:
      FileNotFoundError: the directory holds none of TOKENIZER_FILES (the message lists them).
      ValueError: `tokenizer_config.json` is not a JSON object (the message names the file).
    """
    ckpt_dir = resolve_checkpoint_dir(path_or_hub_name)
    if not any((ckpt_dir / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"no tokenizer files in {ckpt_dir}: looked for "
                                f"{', '.join(TOKENIZER_FILES)}")
    tokenizer_class = _tokenizer_config(ckpt_dir).get("tokenizer_class")
    if tokenizer_class in _GENERIC_CLASSES and (ckpt_dir / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(ckpt_dir))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ckpt_dir), trust_remote_code=False)


def _tokenizer_config(ckpt_dir: Path) -> dict:
    """`tokenizer_config.json` as a dict ({} when absent); ValueError naming it when unreadable."""
    path = ckpt_dir / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: holds a JSON {type(config).__name__}, not an object")
    return config
