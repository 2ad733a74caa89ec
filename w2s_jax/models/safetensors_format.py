"""Reading and writing the safetensors file format with numpy memory maps (bfloat16 included).

A safetensors file is an 8-byte little-endian header length, a JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}} and the raw
little-endian tensor bytes. Reading maps the file, so a tensor is only paged in when used;
nothing is ever unpickled. `safetensors.numpy` cannot express bfloat16, hence this module.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import ml_dtypes
import numpy as np

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
           "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
_LENGTH_BYTES = 8  # the little-endian u64 header length that opens every file


class SafetensorsError(ValueError):
    """A file that is not a valid safetensors file; the message names the path and what is wrong."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: not a valid safetensors file: {problem}")
        self.path = path


class SafetensorsFile:
    """A memory-mapped safetensors file: `names()`, `shape(name)` and `get(name)` (a read-only view).

    Opening reads only the header and the file size and checks them (see :func:`read_header`),
    so a truncated or corrupt file fails here, naming its path, instead of deep inside a later
    reshape. Raises SafetensorsError (a ValueError) for an invalid file, OSError if unreadable.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header, self._data_start = read_header(self.path)
        self._header = header
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
        begin, end = info["data_offsets"]
        raw = self._mmap[self._data_start + begin:self._data_start + end]
        return raw.view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def read_header(path: str | Path) -> tuple[dict[str, dict], int]:
    """Reads and validates the header of the safetensors file at `path`.

    Checks, from the header and the file size alone: the file holds the 8-byte header length;
    the header fits in the file and is a JSON object; every tensor entry has a known dtype, a
    shape of non-negative ints and `data_offsets` [begin, end] with end - begin equal to the
    shape's element count times the dtype's size, lying inside the file.

    Arguments:
      path: the file.
    Returns:
      (tensor name -> {"dtype", "shape", "data_offsets"} without "__metadata__", the byte offset
      where tensor data starts).
    Raises:
      SafetensorsError naming the path and the first problem found; OSError if unreadable.
    """
    path = Path(path)
    file_size = os.path.getsize(path)
    if file_size < _LENGTH_BYTES:
        raise SafetensorsError(path, f"the file is {file_size} bytes, too short for the "
                                     f"{_LENGTH_BYTES}-byte header length (truncated or empty?)")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(_LENGTH_BYTES))
        if header_len > file_size - _LENGTH_BYTES:
            raise SafetensorsError(path, f"header length {header_len} bytes is beyond the file size "
                                         f"({file_size} bytes): truncated, or not a safetensors file")
        header_bytes = f.read(header_len)
    try:
        header = json.loads(header_bytes)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise SafetensorsError(path, f"the {header_len}-byte header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(path, f"the header is JSON {type(header).__name__}, not an object")
    header.pop("__metadata__", None)
    data_start = _LENGTH_BYTES + header_len
    for name, info in header.items():
        _check_entry(path, name, info, data_size=file_size - data_start)
    return header, data_start


def _check_entry(path: Path, name: str, info, *, data_size: int) -> None:
    """Checks one tensor entry of a header against the `data_size` bytes after the header."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise SafetensorsError(path, f"tensor {name!r} entry {info!r} lacks dtype/shape/data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _DTYPES:
        raise SafetensorsError(path, f"tensor {name!r} has unknown dtype {dtype!r} "
                                     f"(known: {', '.join(_DTYPES)})")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise SafetensorsError(path, f"tensor {name!r} has shape {shape!r}, not a list of ints >= 0")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise SafetensorsError(path, f"tensor {name!r} has data_offsets {offsets!r}, "
                                     "not [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
    if end - begin != nbytes:
        raise SafetensorsError(path, f"tensor {name!r} has data_offsets [{begin}, {end}] "
                                     f"({end - begin} bytes), inconsistent with shape {shape} x "
                                     f"{dtype} ({nbytes} bytes)")
    if end > data_size:
        raise SafetensorsError(path, f"tensor {name!r} data_offsets [{begin}, {end}] lie outside the "
                                     f"file: only {data_size} bytes follow the header (truncated?)")


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
