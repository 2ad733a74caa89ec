"""Where a checkpoint lives: a local directory as it is, or a Hugging Face Hub name downloaded once.

Kept apart from the loaders (no JAX, no transformers) so that finding the files costs nothing.
"""

from __future__ import annotations

from pathlib import Path

_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja"]


def resolve_checkpoint_dir(path_or_hub_name: str | Path) -> Path:
    """A local directory as is; otherwise download config/safetensors/tokenizer files from the Hub.

    Arguments:
      path_or_hub_name: a directory, or a Hub repository name such as ``"Qwen/Qwen2.5-0.5B"``.
    Returns:
      the local directory holding the checkpoint's files.
    Raises:
      FileNotFoundError for a path (anything starting with ``.``, ``/`` or ``~``, an existing file,
      or a name with more than one ``/``) that is not a directory.
    """
    path = Path(path_or_hub_name)
    if path.is_dir():
        return path
    name = str(path_or_hub_name)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"checkpoint directory not found: {path_or_hub_name}")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS))
