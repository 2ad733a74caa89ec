"""Logits at chosen positions only, a chunk of rows at a time.

At a vocabulary of 128k, full `B x T x V` float32 logits of a 16 x 1,024 batch take 8.4 GB while
scoring reads a few completion positions of them. These functions take hidden states `N x D`
(positions gathered from `Transformer.hidden`) and unembed `chunk` rows at a time inside a
`lax.map`, so at most `chunk x V` logits exist at once. Each chunk is rematerialised
(`jax.checkpoint`) so a backward pass keeps only the hidden states, not every chunk's logits.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOGIT_ROWS = 256  # rows unembedded at once: 256 x 128k float32 logits = 128 MB


def map_row_chunks(fn: Callable, arrays: tuple[jax.Array, ...], *, chunk: int = LOGIT_ROWS):
    """`fn` applied to consecutive chunks of `chunk` rows of `arrays` (all `N x ...`), results
    concatenated back to N rows.

    Arguments:
      fn: maps a tuple of `chunk x ...` arrays to a pytree of `chunk x ...` arrays.
      arrays: inputs sharing the leading row axis N (padded with zeros to a multiple of chunk).
      chunk: rows per step (N itself when N is smaller).
    Returns:
      the pytree of `N x ...` results.
    """
    num_rows = arrays[0].shape[0]
    chunk = max(1, min(chunk, num_rows))
    padded = -(-num_rows // chunk) * chunk
    chunks = tuple(jnp.pad(a, [(0, padded - num_rows)] + [(0, 0)] * (a.ndim - 1))
                   .reshape(padded // chunk, chunk, *a.shape[1:]) for a in arrays)
    out = jax.lax.map(jax.checkpoint(lambda xs: fn(xs)), chunks)
    return jax.tree.map(lambda y: y.reshape(padded, *y.shape[2:])[:num_rows], out)


def target_logprobs(model, h_NxD: jax.Array, targets_N: jax.Array, *, chunk: int = LOGIT_ROWS) -> jax.Array:
    """log softmax(unembed(h_n))[target_n] for each row n, float32 `N`, unembedding `chunk` rows
    at a time (`z_target - logsumexp(z)`: no N x V log-probability array either)."""

    def chunk_logprobs(xs):
        h_CxD, targets_C = xs
        logits_CxV = model.unembed(h_CxD)
        picked_C = jnp.take_along_axis(logits_CxV, targets_C[:, None], axis=-1)[:, 0]
        return picked_C - jax.nn.logsumexp(logits_CxV, axis=-1)

    return map_row_chunks(chunk_logprobs, (h_NxD, targets_N), chunk=chunk)


def topk_next_tokens(model, h_NxD: jax.Array, k: int, *, chunk: int = LOGIT_ROWS):
    """The k most likely next tokens at each row: `(ids N x k int32, probabilities renormalised
    over the k N x k, kept mass N)`, unembedding `chunk` rows at a time."""

    def chunk_topk(xs):
        (h_CxD,) = xs
        logits_CxV = model.unembed(h_CxD)
        top_logits_CxK, top_ids_CxK = jax.lax.top_k(logits_CxV, k)
        # softmax over the k kept logits = the full softmax restricted to them and renormalised
        kept_C = jnp.exp(jax.nn.logsumexp(top_logits_CxK, axis=-1) - jax.nn.logsumexp(logits_CxV, axis=-1))
        return top_ids_CxK, jax.nn.softmax(top_logits_CxK, axis=-1), kept_C

    return map_row_chunks(chunk_topk, (h_NxD,), chunk=chunk)
