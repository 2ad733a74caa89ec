"""What can be known about a checkpoint without loading its weights, checked before a run starts.

For each model of an experiment (weak, strong, intermediate, judge) :func:`check_checkpoint`
reads, in well under a second whatever the model's size:

- ``config.json``: valid JSON, a supported ``model_type`` and fields (``config_from_hf``);
- the tokenizer: it loads (``load_tokenizer``), and every id of its vocabulary (added tokens
  included) is below the model's ``vocab_size``, so no token it produces indexes past the
  embedding table;
- the weights: ``model.safetensors``, or every shard of ``model.safetensors.index.json``, has a
  valid header (``read_header``), its file is exactly as long as the header says (a truncated or
  extended file is refused), and its tensors are the ones ``config.json`` implies, with their
  shapes (as ``load_pretrained`` will require).

Each problem is a ``ValueError`` of one line naming the model's key, its path and the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from w2s_jax.models.config import ModelConfig, config_from_hf
from w2s_jax.models.safetensors_format import read_header

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved (as the loader)


@dataclasses.dataclass(frozen=True)
class CheckedModel:
    """A checkpoint that passed :func:`check_checkpoint`: its config and tokenizer, loaded."""

    name: str  # as the experiment names it (a path or hub name)
    what: str  # its key in the experiment, e.g. "models.weak[0]"
    directory: Path
    config: ModelConfig
    tokenizer: Any

    @property
    def context(self) -> int:
        """The model's context: ``max_position_embeddings`` of its config.json."""
        return self.config.max_position_embeddings


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its whitespace runs collapsed)."""
    return " ".join(str(error).split()) or type(error).__name__


def check_checkpoint(name: str, what: str) -> CheckedModel:
    """Checks checkpoint ``name`` (a directory or hub name) as the module docstring says.

    Arguments:
      name: the checkpoint, as the experiment gives it.
      what: its key in the experiment, for the message (``"models.strong"``).
    Returns:
      the :class:`CheckedModel`, with its config and tokenizer.
    Raises:
      ValueError: ``"{what} {name!r}: <the problem>"``, one line.
    """
    from w2s_jax.models.tokenizer import load_tokenizer
    from w2s_jax.pipeline.models import resolve_model_dir

    def fail(problem: str) -> ValueError:
        return ValueError(f"{what} {name!r}: {problem}")

    try:
        directory = resolve_model_dir(name)
    except Exception as error:  # noqa: BLE001 -- not found, or a hub download that failed
        raise fail(one_line(error)) from None
    if not (directory / "config.json").is_file():
        raise fail(f"no config.json in {directory} (is this a checkpoint directory?)")
    try:
        config = config_from_hf(directory / "config.json")
    except (OSError, ValueError) as error:
        raise fail(one_line(error)) from None
    try:
        tokenizer = load_tokenizer(directory)
    except Exception as error:  # noqa: BLE001 -- transformers raises many kinds; each is one line
        raise fail(f"the tokenizer does not load: {one_line(error)}") from None
    try:
        check_weights(directory, config)
        check_vocabulary(tokenizer, config, directory)
    except (OSError, ValueError) as error:
        raise fail(one_line(error)) from None
    return CheckedModel(name, what, directory, config, tokenizer)


def check_vocabulary(tokenizer, config: ModelConfig, directory: Path) -> None:
    """Every id the tokenizer can produce is below ``config.vocab_size`` (else a ValueError)."""
    vocabulary = tokenizer.get_vocab()  # added tokens included
    if not vocabulary:
        raise ValueError(f"the tokenizer in {directory} has an empty vocabulary")
    token, largest = max(vocabulary.items(), key=lambda item: item[1])
    if largest >= config.vocab_size:
        raise ValueError(f"the tokenizer in {directory} has token id {largest} ({token!r}) but "
                         f"config.json has vocab_size = {config.vocab_size}: ids >= {config.vocab_size} "
                         "have no embedding (is this the model's own tokenizer?)")


def weight_files(directory: Path) -> dict[str, list[str] | None]:
    """The checkpoint's safetensors files: file name -> the tensors its index assigns to it
    (None without an index). Raises FileNotFoundError / ValueError naming what is missing."""
    index_path = directory / "model.safetensors.index.json"
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
        except ValueError as error:
            raise ValueError(f"{index_path}: not valid JSON ({error})") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise ValueError(f"{index_path}: no \"weight_map\" object mapping tensor names to shard files")
        files: dict[str, list[str] | None] = {}
        for tensor, shard in weight_map.items():
            files.setdefault(shard, []).append(tensor)
        return files
    if (directory / "model.safetensors").is_file():
        return {"model.safetensors": None}
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")) or any(directory.glob("*.pth")):
        raise ValueError(f"{directory} holds only pickled PyTorch weights (.bin/.pt), which are never "
                         "loaded; convert them to safetensors first")
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {directory}")


def check_weights(directory: Path, config: ModelConfig) -> None:
    """Every safetensors header valid and its file exactly as long as it says; the tensors those
    headers list are the ones ``config`` implies, with its shapes (the loader's requirement)."""
    from w2s_jax.models.convert import optional_hf_names, tensor_maps

    shapes: dict[str, tuple[int, ...]] = {}
    for file_name, listed in weight_files(directory).items():
        path = directory / file_name
        if not path.is_file():
            raise FileNotFoundError(f"shard file {file_name!r} listed in model.safetensors.index.json "
                                    f"is missing from {directory}")
        header, data_start = read_header(path)
        end = data_start + max((info["data_offsets"][1] for info in header.values()), default=0)
        size = os.path.getsize(path)
        if size != end:
            raise ValueError(f"{path}: the header's tensors end at byte {end} but the file has {size} "
                             "bytes (truncated, extended, or overwritten?)")
        for tensor in listed or ():
            if tensor not in header:
                raise ValueError(f"tensor {tensor!r} listed in model.safetensors.index.json is not in "
                                 f"shard {file_name!r}")
        shapes.update({tensor: tuple(info["shape"]) for tensor, info in header.items()})
    expected = {m.hf_name: m.hf_shape for m in tensor_maps(config)}
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ValueError(f"checkpoint {directory} is missing tensor(s) {missing[:4]}"
                         f"{' ...' if len(missing) > 4 else ''} that config.json implies")
    for tensor, shape in expected.items():
        if shapes[tensor] != shape:
            raise ValueError(f"tensor {tensor!r} in {directory} has shape {shapes[tensor]}, expected "
                             f"{shape} from config.json")
    allowed = set(expected) | optional_hf_names(config)
    unexpected = sorted(n for n in shapes if n not in allowed and not n.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        raise ValueError(f"checkpoint {directory} has unexpected tensor(s) {unexpected[:4]} for "
                         f"model_type={config.model_type!r} (is config.json right?)")
