"""Host copies into preallocated arrays: cache-blocked transposes that convert the dtype on the
way, and page-aligned, pre-faulted buffers that JAX's CPU client adopts without copying.

Loading a checkpoint changes every linear weight from HF's `out x in` layout to our `in x out`.
numpy's copy of a transposed view walks the source with a stride of a whole row, so each element
read misses the cache. Copying the same transpose one tile of 64 source rows x 256 columns at a
time keeps both tiles in cache, as fast as XLA:CPU's transpose of the same matrix with no device
program to compile (docs/benchmarks.md).
"""

from __future__ import annotations

import math
import mmap

import ml_dtypes
import numpy as np

_ALIGN_BYTES = 64  # XLA:CPU's buffer alignment: device_put adopts such a numpy array in place
_TILE_ROWS, _TILE_COLS = 64, 256  # source rows x columns of one tile
_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def host_buffer(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array of `shape` and `dtype` in its own page-aligned memory map, its pages
    mapped up front.

    Page-aligned (>= 64 bytes), so `jax.device_put` on the CPU makes this memory the device
    buffer instead of copying it: the loaded parameter costs its own size once, not twice. Mapped
    up front (`MAP_POPULATE`, Linux), because faulting fresh pages in one at a time as they are
    first written costs more than the copy itself (docs/benchmarks.md). Its own mapping, so the memory goes back to the system
    when the array is freed. Elsewhere: a 64-byte aligned slice of `np.empty`.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is not None and nbytes >= mmap.PAGESIZE:
        region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
        return np.frombuffer(region, dtype).reshape(shape)
    raw = np.empty(nbytes + _ALIGN_BYTES, np.uint8)
    start = -raw.ctypes.data % _ALIGN_BYTES
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _bits(array: np.ndarray) -> np.ndarray:
    """The same memory as unsigned integers of the same width: numpy copies those with its plain
    loops (a custom dtype such as bfloat16 may go through slower per-element casts)."""
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    """`dst[...] = src` with dst's dtype (same shapes)."""
    if dst.dtype == src.dtype:
        _bits(dst)[...] = _bits(src)
    else:
        dst[...] = src


def _transpose_tiles(dst: np.ndarray, src: np.ndarray) -> None:
    """`dst[...] = src.T` (same dtype), one tile at a time."""
    R, C = src.shape
    for r in range(0, R, _TILE_ROWS):
        for c in range(0, C, _TILE_COLS):
            dst[c:c + _TILE_COLS, r:r + _TILE_ROWS] = src[r:r + _TILE_ROWS, c:c + _TILE_COLS].T


def transpose_into(dst: np.ndarray, src: np.ndarray) -> None:
    """`dst[...] = src.T` for a 2-D `src` of shape (R, C) and `dst` of shape (C, R), converting to
    dst's dtype, one tile at a time (see the module docstring).

    Narrow elements (bfloat16: 2 bytes) move as packs of 8 bytes: the (R, C / 4) matrix of packs
    is transposed tile by tile into a scratch array, then each of the 4 lanes of a pack is written
    to its own rows of dst (a row-local copy): a tile copy costs about the same per element,
    whatever its size. bfloat16 -> float32 widens in that last copy (a float32's bits are the
    bfloat16's followed by 16 zero bits: exact; docs/benchmarks.md). Other
    dtype changes come after the transpose, as a copy of contiguous rows; odd shapes and 8-byte
    dtypes are transposed element by element.
    """
    R, C = src.shape
    if dst.shape != (C, R):
        raise ValueError(f"transpose of shape {src.shape} does not fit an array of shape {dst.shape}")
    pack = 8 // src.dtype.itemsize
    packable = pack > 1 and C % pack == 0 and src.strides[1] == src.dtype.itemsize
    widen = packable and src.dtype == _BFLOAT16 and dst.dtype == np.float32
    if dst.dtype != src.dtype and not widen:  # transpose in src's dtype, then convert contiguous rows
        transposed = np.empty((C, R), src.dtype)
        transpose_into(transposed, src)
        dst[...] = transposed
        return
    if not packable:
        _transpose_tiles(_bits(dst), _bits(src))
        return
    packs = np.empty((C // pack, R), np.uint64)
    _transpose_tiles(packs, np.ascontiguousarray(_bits(src)).view(np.uint64))
    lanes = packs.view(_bits(src).dtype).reshape(C // pack, R, pack)
    target = _bits(dst)
    for lane in range(pack):
        if widen:
            np.left_shift(lanes[:, :, lane], 16, out=target[lane::pack], dtype=np.uint32)
        else:
            target[lane::pack] = lanes[:, :, lane]
