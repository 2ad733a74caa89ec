"""Padding token sequences into fixed-shape batches (host-side numpy, before any jit boundary).

Lengths are rounded up to buckets so that prompts of nearby lengths share one compiled program.
Generation left-pads (every row's last prompt token sits in the same column, so one cache index
serves all rows); scoring right-pads (no row starts with query positions that see no valid key).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from w2s_jax.inference.streams import map_batches


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ``>= max(n, 1)``."""
    if multiple < 1:
        raise ValueError(f"bucket multiple must be >= 1, got {multiple}")
    n = max(int(n), 1)
    return -(-n // multiple) * multiple


def geometric_bucket(n: int, *, minimum: int = 1, per_octave: int = 2) -> int:
    """Smallest length ``>= max(n, minimum)`` on a grid of ``per_octave`` steps per doubling.

    Above 2**k the steps are 2**k / per_octave apart (per_octave=2: ..., 256, 384, 512, 768, 1024,
    ...), so lengths up to a few thousand fall into a dozen buckets and at most a fraction
    1 / per_octave of a bucket is padding. ``per_octave`` must be a power of two.
    """
    if per_octave < 1 or per_octave & (per_octave - 1):
        raise ValueError(f"per_octave must be a power of two, got {per_octave}")
    n = max(int(n), int(minimum), 1)
    octave = 1 << ((n - 1).bit_length() - 1) if n > 1 else 1  # largest power of two below n
    return round_up(n, max(octave // per_octave, 1))


def pad_sequences(
    seqs: Sequence[Sequence[int]], *, length: int, pad_id: int, side: str
) -> tuple[np.ndarray, np.ndarray]:
    """Pads token-id lists into ``tokens_BxT`` (int32) and ``valid_BxT`` (bool, False on padding).

    Arguments:
      seqs: B token-id sequences, each no longer than ``length``.
      length: T, the padded length.
      pad_id: id written at padding slots.
      side: "left" or "right".
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    tokens_BxT = np.full((len(seqs), length), pad_id, dtype=np.int32)
    valid_BxT = np.zeros((len(seqs), length), dtype=bool)
    for row, seq in enumerate(seqs):
        n = len(seq)
        if n > length:
            raise ValueError(f"sequence {row} has {n} tokens, more than the padded length {length}")
        start = length - n if side == "left" else 0
        tokens_BxT[row, start : start + n] = np.asarray(seq, dtype=np.int32)
        valid_BxT[row, start : start + n] = True
    return tokens_BxT, valid_BxT


def positions_from_valid(valid_BxT):
    """Position ids counting valid tokens only: ``max(cumsum(valid) - 1, 0)``.

    Works on numpy or jax arrays; padding slots get position 0 (they are masked anyway).
    """
    xp = np if isinstance(valid_BxT, np.ndarray) else jnp
    return xp.maximum(xp.cumsum(valid_BxT.astype(xp.int32), axis=-1) - 1, 0).astype(xp.int32)


def batch_slices(num_items: int, batch_size: int | None) -> list[slice]:
    """Consecutive slices of at most ``batch_size`` items (one slice for ``None``)."""
    if batch_size is None:
        return [slice(0, num_items)]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    return [slice(i, min(i + batch_size, num_items)) for i in range(0, num_items, batch_size)]


def row_bucket(num_rows: int, batch_size: int) -> int:
    """Rows a batch of ``num_rows`` is padded to: the next power of two, at most ``batch_size``.

    A lone prompt then runs as one row rather than ``batch_size``, while batches of any size share
    at most log2(batch_size) + 1 compiled shapes.
    """
    if not 1 <= num_rows <= batch_size:
        raise ValueError(f"num_rows={num_rows} must be in [1, batch_size={batch_size}]")
    return min(1 << (num_rows - 1).bit_length(), batch_size)


def pad_pair_batch(pairs: Sequence[tuple[list[int], int]], *, batch_size: int, length_bucket: int,
                   pad_id: int, mesh=None) -> tuple[np.ndarray, np.ndarray]:
    """One right-padded batch of (prompt + completion ids, number of prompt ids) pairs, at most
    ``batch_size`` of them: ``(tokens_BxT, valid_BxT)``.

    A short batch is filled with dummy rows up to the next power of two (at most ``batch_size``:
    few compiled shapes, few dummy rows; on a ``mesh``, then up to a multiple of its row splits,
    so every device holds as many rows) and lengths are padded up to a multiple of
    ``length_bucket``. Scoring and top-k read the first ``len(pairs)`` rows only.
    """
    seqs = [full for full, _ in pairs]
    seqs += [[pad_id]] * (round_up(row_bucket(len(seqs), batch_size), row_splits(mesh)) - len(seqs))
    length = round_up(max(len(s) for s in seqs), length_bucket)
    return pad_sequences(seqs, length=length, pad_id=pad_id, side="right")


def row_splits(mesh) -> int:
    """How many ways a batch's rows are split on ``mesh``: data * fsdp (1 without a mesh)."""
    return 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]


def check_rows_divide(rows: int, mesh, *, what: str) -> None:
    """Raises a ValueError naming ``what`` unless ``rows`` splits evenly over ``mesh``'s row axes."""
    splits = row_splits(mesh)
    if rows % splits:
        raise ValueError(f"{what}={rows} is not a multiple of the mesh's data * fsdp = {splits} (each "
                         f"device holds the same number of rows): use {round_up(rows, splits)} or "
                         f"{max(rows // splits, 1) * splits}")


def prefill_chunk(batch_size: int) -> int:
    """The default prefill chunk C for `batch_size` rows: 64 / B as a power of two, within [16, 64].

    A prefill step reads every weight once for its B x C rows, and below about 64 rows a matmul
    is bound by that read, not by its arithmetic (docs/benchmarks.md), so a lone prompt
    prefills in chunks of 64 (a 64-token prompt of a 1B model: 1 step instead of 4); a batch
    of four or more rows keeps C = 16, which pads less.
    """
    chunk = 64
    while chunk > 16 and chunk * batch_size > 64:
        chunk //= 2
    return chunk


_CACHE_MIN_SLOTS = 64  # smallest cache: tiny prompts all share one program
CACHE_PER_OCTAVE = 4  # cache lengths per doubling (..., 256, 320, 384, 448, 512, 640, ...)


def prompt_layout(max_prompt_len: int, num_new: int, chunk: int) -> tuple[int, int]:
    """(number of prefill chunks, cache slots S) for a batch whose longest prompt has this many
    tokens: the prompts fill slots [0, num_chunks * chunk) and S holds them plus ``num_new - 1``
    new tokens (the last new token is sampled, never fed back, so it needs no slot: with C = 64
    and 64 new tokens, a 320-token prompt fits 384 slots, not 512).

    S lies on a geometric grid of `CACHE_PER_OCTAVE` = 4 lengths per doubling, so at most a
    quarter of the cache is never written. Every decoding step reads all S slots, so a coarser
    grid is slower (docs/benchmarks.md); the price is up to twice as many compiled
    programs over a range of prompt lengths (each S compiles one prefill and one decode program).
    """
    num_chunks = -(-max_prompt_len // chunk)
    return num_chunks, geometric_bucket(num_chunks * chunk + num_new - 1, minimum=_CACHE_MIN_SLOTS,
                                        per_octave=CACHE_PER_OCTAVE)


def map_pair_batches(run, pairs: Sequence[tuple[list[int], int]], *, batch_size: int, length_bucket: int,
                     pad_id: int, mesh, streams: int, desc: str) -> list:
    """``run(batch_pairs, tokens_BxT, valid_BxT)`` (a list of per-pair results) over the pairs in
    batches of ``batch_size``, each padded by :func:`pad_pair_batch`, up to ``streams`` batches at
    once (`streams.map_batches`, longest first); the results of all pairs, in order."""

    def padded(batch: slice) -> list:
        return run(pairs[batch], *pad_pair_batch(pairs[batch], batch_size=batch_size, length_bucket=length_bucket,
                                                 pad_id=pad_id, mesh=mesh))

    batches = batch_slices(len(pairs), batch_size)
    parts = map_batches(padded, batches, streams=streams, desc=desc,
                        costs=[max(len(full) for full, _ in pairs[b]) for b in batches])
    return [result for part in parts for result in part]
