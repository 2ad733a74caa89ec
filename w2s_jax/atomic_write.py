"""Writing a file so that a reader (or a rerun after a kill) never sees half of it.

The bytes go to a temporary file in the target's directory, are flushed and fsync'ed, and the
temporary file is renamed over the target (``os.replace`` is atomic on POSIX and Windows). A kill
at any moment leaves either the old file or the new one, and at worst a stray ``.name.*.tmp``.
Imports only the standard library: the theory half, the trainer and the pipeline all use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically; creates the parent directory; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
