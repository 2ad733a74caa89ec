"""A model's top-k next-token distribution along a completion: the targets of context distillation.

For a prompt ``x_1..x_m`` and a completion ``y_1..y_n`` the model reads ``x + y`` once; the logits
at the position before ``y_j`` give ``p(. | x, y_<j)``. At each of the n completion positions this
keeps the k most likely token ids and their probabilities renormalised over those k, so a
distribution over the vocabulary travels as n x k ids and n x k probabilities. The top-k is taken
inside the jitted forward pass at the completion positions only, a chunk of rows at a time, so
no ``B x T x V`` array is formed and only ``N x k`` numbers leave the device. Batches are
right-padded and masked exactly as in :mod:`~w2s_jax.inference.scoring`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.inference.batching import check_rows_divide, map_pair_batches
from w2s_jax.inference.streams import resolve_streams
from w2s_jax.inference.scoring import _pad_id, gather_positions, sequence_hidden, tokenize_pair
from w2s_jax.models.logits import topk_next_tokens
from w2s_jax.parallel import shard_batch


@dataclasses.dataclass(frozen=True)
class TopKResult:
    """The top-k next-token distribution at each completion token of one (prompt, completion) pair.

    Row j describes the distribution that predicts completion token j (from the prompt and the
    completion tokens before it).
    """

    token_ids: list[int]  # the completion's token ids
    topk_ids: np.ndarray  # int32, n x k: the k most likely next tokens, most likely first
    topk_probs: np.ndarray  # float32, n x k: their probabilities renormalised to sum to 1 per row
    kept_mass: np.ndarray  # float32, n: the probability the k tokens had before renormalising


@functools.partial(jax.jit, static_argnames=("k", "mesh"))
def _next_token_topk(graphdef, state, tokens_BxT, valid_BxT, rows_N, cols_N, *, k, mesh=None):
    """Top-k at the hidden states (rows_N, cols_N), `N x ...`; row index B marks padding."""
    model = nnx.merge(graphdef, state)
    h_BxTxD = sequence_hidden(model, tokens_BxT, valid_BxT, mesh=mesh)
    return topk_next_tokens(model, h_BxTxD[jnp.minimum(rows_N, tokens_BxT.shape[0] - 1), cols_N], k)


def next_token_topk_arrays(model, tokens_BxT, valid_BxT, k: int):
    """Top-k next-token ids, renormalised probabilities and kept mass at every position.

    Arguments:
      model: a ``w2s_jax.models.Transformer``.
      tokens_BxT: int token ids, padded anywhere ``valid_BxT`` is False.
      valid_BxT: bool, False on padding.
      k: tokens kept per position (1 <= k <= vocabulary size).
    Returns:
      ``(ids_BxTxK int32, probs_BxTxK float32, kept_BxT float32)``; position t describes the
      distribution of token t + 1.
    """
    B, T = np.shape(tokens_BxT)
    rows_N, cols_N = gather_positions(np.ones((B, T), bool))
    ids_NxK, probs_NxK, kept_N = _next_token_topk(*nnx.split(model), jnp.asarray(tokens_BxT),
                                                   jnp.asarray(valid_BxT), rows_N, cols_N, k=k)
    return (ids_NxK[: B * T].reshape(B, T, k), probs_NxK[: B * T].reshape(B, T, k),
            kept_N[: B * T].reshape(B, T))


def next_token_topk(
    model,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    k: int,
    *,
    batch_size: int = 8,
    length_bucket: int = 16,
    mesh=None,
    streams: int | None = None,
) -> list[TopKResult]:
    """The model's top-k next-token distribution at each completion token of each pair.

    Arguments:
      model: a ``w2s_jax.models.Transformer``.
      prompts, completions: equal-length lists of token-id lists (concatenated as they are).
      k: tokens kept per position.
      batch_size: most sequences per forward pass (a short batch is filled with dummy rows
        up to the next power of two only).
      length_bucket: pad lengths up to a multiple of this to limit recompiles.
      mesh: a ``jax.sharding.Mesh``: each batch's rows are split over its ("data", "fsdp") axes
        (``batch_size`` must be a multiple of data * fsdp; a short batch is filled up to one).
      streams: batches run at once, each on a thread (None: ``streams.default_streams``).
    Returns:
      one :class:`TopKResult` per pair, in order.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    vocab = int(model.config.vocab_size)
    if not isinstance(k, int) or not 1 <= k <= vocab:
        raise ValueError(f"top-k must be an int in [1, {vocab}] (the vocabulary size), got {k!r}")
    check_rows_divide(batch_size, mesh, what="top-k batch_size")
    pairs = [tokenize_pair(None, p, c, i) for i, (p, c) in enumerate(zip(prompts, completions))]
    pad_id = _pad_id(model)
    graphdef, state = nnx.split(model)

    def run(batch, tokens_BxT, valid_BxT) -> list[TopKResult]:
        # completion token j sits at num_prompt + j and is predicted from the position before:
        # only those positions are unembedded
        predicting_BxT = np.zeros_like(valid_BxT)
        for row, (full, num_prompt) in enumerate(batch):
            predicting_BxT[row, num_prompt - 1 : len(full) - 1] = True
        rows_N, cols_N = gather_positions(predicting_BxT)
        rows = shard_batch({"tokens_BxT": tokens_BxT, "valid_BxT": valid_BxT}, mesh)
        ids_NxK, probs_NxK, kept_N = (np.asarray(a) for a in _next_token_topk(
            graphdef, state, rows["tokens_BxT"], rows["valid_BxT"], rows_N, cols_N, k=k, mesh=mesh))
        results, start = [], 0
        for full, num_prompt in batch:  # np.nonzero lists positions row by row, in order
            taken = slice(start, start + len(full) - num_prompt)
            start = taken.stop
            results.append(TopKResult(token_ids=full[num_prompt:], topk_ids=ids_NxK[taken],
                                      topk_probs=probs_NxK[taken], kept_mass=kept_N[taken]))
        return results

    return map_pair_batches(run, pairs, batch_size=batch_size, length_bucket=length_bucket, pad_id=pad_id,
                            mesh=mesh, streams=resolve_streams(streams, mesh, model.backend), desc="top-k")
