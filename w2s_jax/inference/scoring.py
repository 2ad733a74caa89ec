"""Log-probabilities of completions given prompts: the primitive that evaluation and refinement use.

For a sequence ``x_1..x_T`` the model's logits at position ``t`` give ``log p(x_{t+1} | x_{<=t})``.
:func:`token_logprobs` shifts that into alignment with the tokens, so entry ``t`` of the result is
the log-probability of token ``t`` itself (entry 0, which has no context, is 0), masked to the
completion. Batches are right-padded; the model masks padding through ``valid_BxT``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.inference.batching import check_rows_divide, map_pair_batches, positions_from_valid
from w2s_jax.inference.prefill import CacheSpec, place_cache, run_chunks, scoring_chunk, stacked_cache
from w2s_jax.inference.streams import resolve_streams
from w2s_jax.models.logits import target_logprobs
from w2s_jax.parallel import shard_batch


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    """Log-probability of one completion given its prompt."""

    token_ids: list[int]  # the completion's token ids (tokens of prompt+completion after the prompt)
    token_logprobs: list[float]  # log p(token | everything before it), one float per completion token
    sum_logprob: float  # sum of token_logprobs: log p(completion | prompt)


def token_logprobs(logits_BxTxV: jax.Array, tokens_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Log-probability of each token under the logits of the position before it.

    Arguments:
      logits_BxTxV: next-token logits; position t predicts token t + 1.
      tokens_BxT: the token ids that were fed in.
      mask_BxT: bool, which tokens to score (position 0 is never scored: it has no context).
    Returns:
      float32 ``logprobs_BxT`` with ``log softmax(logits[t-1])[tokens[t]]`` where masked, else 0.
    """
    logprobs_BxTm1xV = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32), axis=-1)
    targets_BxTm1 = tokens_BxT[:, 1:]
    picked_BxTm1 = jnp.take_along_axis(logprobs_BxTm1xV, targets_BxTm1[..., None], axis=-1)[..., 0]
    picked_BxT = jnp.pad(picked_BxTm1, ((0, 0), (1, 0)))
    return jnp.where(mask_BxT, picked_BxT, 0.0)


def gather_positions(mask_BxT, *, minimum: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the True entries of ``mask_BxT`` (host-side), padded with row
    index B (past the end: dropped on scatter) up to a power of two >= ``minimum`` entries, so
    batches with similar numbers of scored tokens share one compiled program."""
    mask_BxT = np.asarray(mask_BxT, bool)
    rows_N, cols_N = np.nonzero(mask_BxT)
    size = max(minimum, 1 << max(len(rows_N) - 1, 0).bit_length())
    pad = size - len(rows_N)
    return (np.concatenate([rows_N, np.full(pad, mask_BxT.shape[0])]).astype(np.int32),
            np.concatenate([cols_N, np.zeros(pad, np.int64)]).astype(np.int32))


@functools.partial(jax.jit, static_argnames=("mesh",))
def _completion_logprobs(graphdef, state, tokens_BxT, valid_BxT, rows_N, cols_N, *, mesh=None):
    model = nnx.merge(graphdef, state)
    h_BxTxD = sequence_hidden(model, tokens_BxT, valid_BxT, mesh=mesh)
    B, T = tokens_BxT.shape
    # token (row, col) is predicted by the hidden state at (row, col - 1); padding entries (row B)
    # read row B - 1 and are dropped when scattered back
    safe_rows_N, safe_cols_N = jnp.minimum(rows_N, B - 1), jnp.clip(cols_N, 1, T - 1)
    logprobs_N = target_logprobs(model, h_BxTxD[safe_rows_N, safe_cols_N - 1],
                                 tokens_BxT[safe_rows_N, safe_cols_N])
    return jnp.zeros((B, T), jnp.float32).at[rows_N, cols_N].set(logprobs_N, mode="drop")


def sequence_hidden(model, tokens_BxT, valid_BxT, *, mesh=None):
    """Every position's hidden state (``Transformer.hidden``'s output) of right-padded sequences.
    Long ones run in chunks through a KV cache (`prefill.run_chunks`, chunk `prefill.scoring_chunk`):
    the attention of a chunk of C positions forms ``C x T`` scores, never ``T x T``. Short ones
    (one chunk) run as one plain forward pass. Traced inside a jitted function."""
    B, T = tokens_BxT.shape
    positions_BxT = positions_from_valid(valid_BxT)
    chunk = T if model.backend.prefill == "whole" else scoring_chunk(B, T)  # accelerators: one pass
    if chunk == T:
        return model.hidden(tokens_BxT, positions_BxT=positions_BxT, valid_BxT=valid_BxT)[0]
    spec = CacheSpec(model.config, B, T, jnp.dtype(model.dtype), mesh)
    _, h_BxTxD = run_chunks(model, tokens_BxT, positions_BxT, valid_BxT, place_cache(stacked_cache(spec), spec),
                            num_chunks=T // chunk, chunk=chunk, keep="all")
    return h_BxTxD


def completion_logprobs(model, tokens_BxT, valid_BxT, completion_mask_BxT, *, mesh=None) -> jax.Array:
    """Per-token log-probabilities of the masked tokens under ``model`` (one jitted forward pass).

    Only the positions that predict a scored token are unembedded, a chunk of rows at a time
    (``w2s_jax.models.logits``): no ``B x T x V`` array is formed.

    Arguments:
      model: a ``w2s_jax.models.Transformer``.
      tokens_BxT: int token ids, padded anywhere ``valid_BxT`` is False.
      valid_BxT: bool, False on padding.
      completion_mask_BxT: bool, True on the tokens to score (position 0, without context, never is).
      mesh: a ``jax.sharding.Mesh``: the rows are split over its ("data", "fsdp") axes (their
        number must divide evenly), the model placed as it is (``load_pretrained(..., mesh=)``).
    Returns:
      float32 ``logprobs_BxT``, 0 where not scored; ``.sum(-1)`` is each row's log-likelihood.
    """
    scored_BxT = np.asarray(completion_mask_BxT, bool) & np.asarray(valid_BxT, bool)
    scored_BxT[:, 0] = False
    rows_N, cols_N = gather_positions(scored_BxT)
    graphdef, state = nnx.split(model)
    check_rows_divide(len(tokens_BxT), mesh, what="scoring rows")
    rows = shard_batch({"tokens_BxT": np.asarray(tokens_BxT), "valid_BxT": np.asarray(valid_BxT)}, mesh)
    return _completion_logprobs(graphdef, state, rows["tokens_BxT"], rows["valid_BxT"], rows_N, cols_N,
                                mesh=mesh)


def score(
    model,
    tokenizer,
    prompts: Sequence,
    completions: Sequence,
    *,
    batch_size: int = 8,
    length_bucket: int = 16,
    mesh=None,
    streams: int | None = None,
) -> list[ScoreResult]:
    """Scores each completion given its prompt: ``log p(completion | prompt)`` and per token.

    Strings are tokenized twice, prompt alone and prompt + completion; the completion tokens are
    those of prompt + completion past the longest common prefix with the prompt's tokens, so a
    token merged across the boundary counts as completion. Token-id lists are concatenated as-is.
    A pair with no context or nothing to score raises ValueError (see :func:`tokenize_pair`).

    Arguments:
      model: a ``w2s_jax.models.Transformer``.
      tokenizer: a ``transformers`` tokenizer (may be None when all inputs are token-id lists).
      prompts, completions: equal-length lists of strings or token-id lists.
      batch_size: most sequences per forward pass (a short batch is filled with dummy rows
        up to the next power of two only).
      length_bucket: pad lengths up to a multiple of this to limit recompiles.
      mesh: a ``jax.sharding.Mesh``: each batch's rows are split over its ("data", "fsdp") axes
        (``batch_size`` must be a multiple of data * fsdp; a short batch is filled up to one).
      streams: batches scored at once, each on a thread (None: ``streams.default_streams``).
    Returns:
      one :class:`ScoreResult` per pair, in order.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    check_rows_divide(batch_size, mesh, what="score batch_size")
    pairs = [tokenize_pair(tokenizer, p, c, i) for i, (p, c) in enumerate(zip(prompts, completions))]
    pad_id = _pad_id(model)

    def run(batch, tokens_BxT, valid_BxT) -> list[ScoreResult]:
        mask_BxT = np.zeros_like(valid_BxT)
        for row, (full, num_prompt) in enumerate(batch):
            mask_BxT[row, num_prompt : len(full)] = True
        logprobs_BxT = np.asarray(completion_logprobs(model, tokens_BxT, valid_BxT, mask_BxT, mesh=mesh))
        results = []
        for row, (full, num_prompt) in enumerate(batch):
            row_logprobs = logprobs_BxT[row, num_prompt : len(full)].astype(np.float64)
            results.append(ScoreResult(token_ids=full[num_prompt:],
                                       token_logprobs=row_logprobs.tolist(),
                                       sum_logprob=float(row_logprobs.sum())))
        return results

    return map_pair_batches(run, pairs, batch_size=batch_size, length_bucket=length_bucket, pad_id=pad_id,
                            mesh=mesh, streams=resolve_streams(streams, mesh, model.backend), desc="score")


def tokenize_pair(tokenizer, prompt, completion, index: int = 0) -> tuple[list[int], int]:
    """Token ids of one (prompt, completion) pair, as :func:`score` scores it.

    Strings: the completion's tokens are those of prompt + completion past the longest common
    prefix with the prompt's own tokens (a token merged across the boundary counts as completion).
    Token-id lists are concatenated as they are.

    Arguments:
      tokenizer: a ``transformers`` tokenizer (None is fine for token-id lists).
      prompt, completion: both strings or both token-id lists.
      index: the pair's position, named in error messages.
    Returns:
      (prompt + completion ids, number of leading ids that are context, not scored).
    Raises:
      ValueError naming the pair when there is nothing to score or no context to score it in:
      the prompt gives no tokens, the completion merges with the prompt's last token so that no
      prompt token is left, or the completion adds no tokens.
    """
    if isinstance(prompt, str) != isinstance(completion, str):
        raise ValueError(f"pair {index}: prompt and completion must both be strings or both ids")
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError(f"pair {index} is text but no tokenizer was given")
        prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        full = list(tokenizer(prompt + completion, add_special_tokens=True)["input_ids"])
        num_prompt = 0
        while (num_prompt < min(len(prompt_ids), len(full))
               and prompt_ids[num_prompt] == full[num_prompt]):
            num_prompt += 1
    else:
        prompt_ids, full = [int(t) for t in prompt], [int(t) for t in prompt] + [int(t) for t in completion]
        num_prompt = len(prompt_ids)
    pair = f"pair {index} (prompt {_short(prompt)}, completion {_short(completion)})"
    if not prompt_ids:
        raise ValueError(f"{pair}: the prompt gives no tokens, so the first completion token has "
                         "no context to be scored in; give a non-empty prompt")
    if num_prompt == 0:
        # Without a BOS token, a one-token prompt that fuses with the completion leaves nothing.
        raise ValueError(f"{pair}: the completion merges with the prompt's last token, so no "
                         "prompt token is left as context to score it in; start the completion at "
                         f"a token boundary, e.g. with a space: {_short(' ' + completion.lstrip())}")
    if num_prompt == len(full):
        raise ValueError(f"{pair}: the completion adds no tokens after the prompt: nothing to score")
    return full, num_prompt


def _short(text_or_ids, limit: int = 40) -> str:
    """``repr`` cut to about ``limit`` characters, for error messages."""
    shown = repr(text_or_ids)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _pad_id(model) -> int:
    config = model.config
    if getattr(config, "pad_token_id", None) is not None:
        return int(config.pad_token_id)
    return int(config.eos_token_ids[0]) if config.eos_token_ids else 0
