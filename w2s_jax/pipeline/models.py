"""The run's models: content fingerprints for stage keys, and a pool that loads each lazily.

A model's identity in a stage key is what its files hold, not its path: the sha256 of every
regular file at the top of its checkpoint directory (``config.json``, ``generation_config.json``,
every tokenizer file and chat template, every ``*.safetensors`` byte, the index; a superset of
what loading reads), each named by its file name. Hashing gigabytes on every run would be slow, so
each file's digest is remembered in a cache (one small JSON per file under the store's
``fingerprints/``) by (absolute path, size, mtime_ns, ctime_ns, inode): a file rewritten in
place, replaced, renamed over or touched gets a new entry and is hashed again; ``ctime_ns`` is set
by the kernel on every write and cannot be set back by a user, so even an edit that restores the
old size and modification time is seen.
"""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path

from w2s_jax.atomic_write import atomic_write_text
from w2s_jax.inference.engine import Engine

_READ_BYTES = 1 << 22


def resolve_model_dir(name: str) -> Path:
    """The local checkpoint directory of a path or hub name (downloaded when online)."""
    from w2s_jax.models.hub import resolve_checkpoint_dir

    return Path(resolve_checkpoint_dir(name))


def file_digest(path: Path, cache_dir: Path | None = None) -> str:
    """sha256 of a file's bytes, remembered in ``cache_dir`` by (path, size, mtime_ns, ctime_ns,
    inode) (see the module docstring)."""
    path = path.resolve()
    stat = path.stat()
    stamp = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
             "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}
    entry = None
    if cache_dir is not None:
        entry = Path(cache_dir) / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
        try:
            cached = json.loads(entry.read_text())
            if cached.get("stamp") == stamp:
                return cached["sha256"]
        except (OSError, ValueError, AttributeError):
            pass
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BYTES):
            digest.update(block)
    if path.stat().st_ctime_ns != stat.st_ctime_ns:  # written while we read: do not remember it
        return file_digest(path, cache_dir)
    if entry is not None:
        atomic_write_text(entry, json.dumps({"stamp": stamp, "sha256": digest.hexdigest()}))
    return digest.hexdigest()


def model_files(directory: Path) -> list[Path]:
    """The files of a checkpoint that enter its fingerprint (every visible top-level file)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def model_fingerprint(name: str, cache_dir: str | Path | None = None) -> str:
    """sha256 of a checkpoint's contents (see the module docstring)."""
    directory = resolve_model_dir(name)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no config.json (is this a checkpoint directory?)")
    files = model_files(directory)
    if not any(p.suffix == ".safetensors" for p in files):
        raise FileNotFoundError(f"{directory}: no *.safetensors weight files")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_digest(path, cache_dir)}\n".encode())
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

    def engine(self, name: str, *, chat: bool | None = None, dtype: str | None = None) -> Engine:
        """The engine of model ``name`` (a path or hub name) with ``chat`` template and compute
        ``dtype`` (default: the pool's), loading it if needed."""
        chat = self.chat if chat is None else chat
        dtype = self.dtype if dtype is None else dtype
        slot = f"{name}\0{dtype}\0{chat}"
        if slot in self._engines:
            self._engines.move_to_end(slot)
            return self._engines[slot]
        while len(self._engines) >= self.max_loaded:
            self._engines.popitem(last=False)
        model, tokenizer = load_model(name, dtype=dtype, mesh=self.mesh, rules=self.rules, layout="per_layer")
        engine = Engine(model, tokenizer, chat=chat, batch_size=self.batch_size,
                        length_bucket=self.length_bucket, name=name, mesh=self.mesh, streams=self.streams)
        self._engines[slot] = engine
        return engine

    def tokenizer(self, name: str):
        """The tokenizer of model ``name`` without loading its weights (when not loaded)."""
        for slot, engine in self._engines.items():
            if slot.split("\0", 1)[0] == name:
                return engine.tokenizer
        from w2s_jax.models import load_tokenizer

        return load_tokenizer(name)

    def drop(self, name: str) -> None:
        """Forgets model ``name`` (e.g. before fine-tuning a fresh copy of it)."""
        for slot in [s for s in self._engines if s.split("\0", 1)[0] == name]:
            del self._engines[slot]

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
