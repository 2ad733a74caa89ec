"""Reading and writing the safetensors file format with numpy memory maps (bfloat16 included).

A safetensors file is an 8-byte little-endian header length, a JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}} and the raw
little-endian tensor bytes. Reading maps the file, so a tensor is only paged in when used;
nothing is ever unpickled. `safetensors.numpy` cannot express bfloat16, hence this module.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import ml_dtypes
import numpy as np

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsFile:
    """A memory-mapped safetensors file: `names()`, `shape(name)` and `get(name)` (a read-only view)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        self._header = header
        self._data_start = 8 + header_len
        self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r") if header else None

    def names(self) -> list[str]:
        """Tensor names in the file."""
        return list(self._header)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor `name` (read from the header only)."""
        return tuple(self._header[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        """Tensor `name` as a read-only numpy view of the mapped file."""
        info = self._header[name]
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{self.path.name}: tensor {name!r} has unsupported dtype {info['dtype']!r}")
        begin, end = info["data_offsets"]
        raw = self._mmap[self._data_start + begin:self._data_start + end]
        return raw.view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def write_safetensors(path: str | Path, tensors: Iterable[tuple[str, np.ndarray]],
                      metadata: dict[str, str] | None = None) -> None:
    """Write (name, array) pairs to `path`; arrays are materialised one at a time.

    `tensors` is iterated twice (header, then data), so pass a list or a re-iterable.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, array in tensors:
        dtype = np.dtype(array.dtype)
        if dtype not in _NAMES:
            raise ValueError(f"tensor {name!r}: dtype {dtype} cannot be written to safetensors")
        nbytes = int(np.prod(array.shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _NAMES[dtype], "shape": list(array.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")  # written whole, then renamed: never half a file
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(header_bytes)))
            f.write(header_bytes)
            for _, array in tensors:
                f.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
