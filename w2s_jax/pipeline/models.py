"""The run's models: content fingerprints for stage hashes, and a pool that loads each lazily.

A model's identity in a stage hash is what its files hold, not its path: ``config.json``, every
safetensors file's size and header, and 16 evenly spaced 4 KiB blocks of each file's data. Two
checkpoints of the same shape with different weights get different fingerprints (every sampled
block differs); reading them costs a few hundred KiB per file, whatever the model's size.
"""

from __future__ import annotations

import collections
import hashlib
import struct
from pathlib import Path

from w2s_jax.inference.engine import Engine

_BLOCKS, _BLOCK_BYTES = 16, 4096


def resolve_model_dir(name: str) -> Path:
    """The local checkpoint directory of a path or hub name (downloaded when online)."""
    from w2s_jax.models.hub import resolve_checkpoint_dir

    return Path(resolve_checkpoint_dir(name))


def model_fingerprint(name: str) -> str:
    """sha256 of a checkpoint's contents (see the module docstring)."""
    directory = resolve_model_dir(name)
    digest = hashlib.sha256()
    config = directory / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{directory}: no config.json (is this a checkpoint directory?)")
    digest.update(config.read_bytes())
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors weight files")
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as handle:
            head = handle.read(8)
            header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            digest.update(head + handle.read(min(header_len, size)))
            start = 8 + header_len
            span = max(size - start - _BLOCK_BYTES, 0)
            for i in range(_BLOCKS):
                handle.seek(start + span * i // max(_BLOCKS - 1, 1))
                digest.update(handle.read(_BLOCK_BYTES))
    return digest.hexdigest()


class ModelPool:
    """Loads models on first use and keeps the ``max_loaded`` most recently used in memory.

    Arguments:
      dtype: compute dtype name of inference ("float32" or "bfloat16").
      chat, batch_size, length_bucket, streams: the :class:`Engine` settings of every model.
      max_loaded: models held at once (a 7B strong model and a 70B judge rarely fit together).
    """

    def __init__(self, *, dtype: str = "float32", chat: bool = False, batch_size: int = 16,
                 length_bucket: int = 64, max_loaded: int = 2, mesh=None, rules=None,
                 streams: int | None = None):
        self.dtype, self.chat, self.mesh, self.rules, self.streams = dtype, chat, mesh, rules, streams
        self.batch_size, self.length_bucket, self.max_loaded = batch_size, length_bucket, max_loaded
        self._engines: collections.OrderedDict[str, Engine] = collections.OrderedDict()

    def engine(self, name: str) -> Engine:
        """The engine of model ``name`` (a path or hub name), loading it if needed."""
        if name in self._engines:
            self._engines.move_to_end(name)
            return self._engines[name]
        while len(self._engines) >= self.max_loaded:
            self._engines.popitem(last=False)
        model, tokenizer = load_model(name, dtype=self.dtype, mesh=self.mesh, rules=self.rules, layout="per_layer")
        engine = Engine(model, tokenizer, chat=self.chat, batch_size=self.batch_size,
                        length_bucket=self.length_bucket, name=name, mesh=self.mesh, streams=self.streams)
        self._engines[name] = engine
        return engine

    def tokenizer(self, name: str):
        """The tokenizer of model ``name`` without loading its weights (when not loaded)."""
        if name in self._engines:
            return self._engines[name].tokenizer
        from w2s_jax.models import load_tokenizer

        return load_tokenizer(name)

    def drop(self, name: str) -> None:
        """Forgets model ``name`` (e.g. before fine-tuning a fresh copy of it)."""
        self._engines.pop(name, None)

    def clear(self) -> None:
        """Forgets every model."""
        self._engines.clear()


def load_model(name: str, *, dtype: str = "float32", mesh=None, rules=None, layout: str = "stacked"):
    """``(model, tokenizer)`` of a checkpoint, in compute ``dtype`` with float32 parameters for
    float32 and bfloat16 parameters for bfloat16 inference; ``layout="per_layer"`` for a model
    that only generates and scores (faster decoding; ``w2s_jax.models.layer_weights``), the
    default "stacked" for one that is trained."""
    import jax.numpy as jnp

    from w2s_jax.models import load_pretrained, load_tokenizer

    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    model, _ = load_pretrained(name, dtype=jdtype, mesh=mesh, rules=rules, layout=layout)
    return model, load_tokenizer(name)
