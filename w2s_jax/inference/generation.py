"""Batched autoregressive generation with a KV cache.

Per batch: prompts are left-padded so that their last token sits at slot P - 1, where P is a
multiple of ``prompt_bucket`` (C); a cache of S slots is made, S the smallest length bucket (two
per octave: 256, 384, 512, 768, ...) holding P + N - 1 (N the bucketed ``max_new_tokens``). One jitted
prefill writes the prompts into the cache C slots at a time in a loop whose trip count is an
argument and samples the first new token from the logits of the last prompt slot alone (the
full-length logits are never formed); one jitted decode loop (``lax.while_loop`` over
single-token steps) produces the rest. The loop exits as soon as every row has hit EOS or the step
budget. Stop strings need the tokenizer, so with stop strings the loop runs in chunks of
``_STOP_CHECK_EVERY`` steps and the host marks rows whose decoded text contains a stop string as
finished between chunks.

Both jitted functions take the model as ``nnx.split`` graphdef (static) + state, and their shapes
depend on the prompt length only through S, so they compile once per (batch size, S, new-token
bucket, sampler): with C = 64 and 64 new tokens, prompts of 193 to 448 tokens share two cache
lengths (384 and 512 slots), four programs, and later calls reuse them.

With a ``mesh`` (``w2s_jax.parallel``), every per-row array and the cache are placed with the
batch axis split over the mesh's ("data", "fsdp") axes; the model is placed by ``shard_model`` or
``load_pretrained(..., mesh=)``, and jit follows both placements.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.inference.batching import (
    batch_slices,
    check_rows_divide,
    pad_sequences,
    positions_from_valid,
    prefill_chunk,
    prompt_layout,
    round_up,
    row_splits,
)
from w2s_jax.inference.compile_ahead import compile_side_by_side, signature
from w2s_jax.inference.prefill import CacheSpec, place_cache, run_chunks, stacked_cache
from w2s_jax.inference.prompts import encode_prompts, mark_stopped, trim_after_eos
from w2s_jax.inference.sampling import Greedy, Sampler, example_keys
from w2s_jax.inference.streams import map_batches, resolve_streams
from w2s_jax.parallel import shard_batch

_STOP_CHECK_EVERY = 16  # decode steps between host-side stop-string checks
# Trace counters (a Python side effect runs only while tracing); tests use them to prove that the
# decode step compiles once per shape.
TRACE_COUNTS: collections.Counter = collections.Counter()


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """Output of :func:`generate`, one entry per prompt, in prompt order."""

    token_ids: list[list[int]]  # generated ids per prompt (with the EOS / stop-completing token)
    texts: list[str] | None  # decoded generations (special tokens skipped, cut before a stop string)
    finish_reasons: list[str]  # "eos", "stop" (stop string) or "length" (max_new_tokens reached)
    prompt_token_ids: list[list[int]]  # the prompt ids that were fed to the model


class _DecodeState(NamedTuple):
    cache: object  # KVCache
    tokens_BxN: jax.Array  # generated tokens, pad after a row finishes
    position_B: jax.Array  # position id of the newest generated token
    done_B: jax.Array  # row finished (EOS, or stop string marked by the host)
    step: jax.Array  # int32 scalar: number of tokens generated so far (same for all rows)


def _is_eos(token_B, eos_ids: tuple[int, ...]):
    if not eos_ids:
        return jnp.zeros(token_B.shape, bool)
    return jnp.isin(token_B, jnp.asarray(eos_ids, jnp.int32))


@functools.partial(jax.jit, static_argnames=("graphdef", "sampler", "eos_ids", "num_new", "chunk", "cache_spec"))
def _prefill(graphdef, state, tokens_BxS, valid_BxS, num_chunks, active_B, key, example_index_B, *,
             sampler, eos_ids, num_new, chunk, cache_spec):
    """Runs the prompts through the model, filling the cache, and samples the first new token.

    The prompts fill slots [0, num_chunks * chunk) of ``tokens_BxS`` (left-padded, so every
    row's last prompt token is at slot ``num_chunks * chunk - 1``), which go through the model
    ``chunk`` at a time; the hidden state of each chunk's last slot is carried along, and the
    last chunk's gives the logits to sample from (the other positions are never unembedded).
    The last prompt token is not run again on its own: that was a full pass over the weights,
    one decoding step's worth of time, and a second copy of the model in the program.
    ``num_chunks`` is traced: one program serves every prompt length that fits the cache; None
    (a backend that prefills whole, `Backend.prefill`) runs the ``chunk`` prompt slots in one
    pass, one program per prompt length bucket. Rows
    with ``active_B`` False are batch filler: they start finished. The cache is made here (no
    buffer passed in to keep alive), stacked while prefilling and handed to decoding one array
    per layer (`models/kv_cache.py`).
    """
    TRACE_COUNTS["prefill"] += 1
    model = nnx.merge(graphdef, state)
    positions_BxS = positions_from_valid(valid_BxS)
    cache = place_cache(stacked_cache(cache_spec), cache_spec)
    cache, h_last_BxD = run_chunks(model, tokens_BxS, positions_BxS, valid_BxS, cache,
                                   num_chunks=num_chunks, chunk=chunk, keep="last")
    prompt_len = chunk if num_chunks is None else num_chunks * chunk
    last_position_B = jax.lax.dynamic_index_in_dim(positions_BxS, prompt_len - 1, axis=1, keepdims=False)
    batch_size = tokens_BxS.shape[0]
    logits_BxV = model.unembed(h_last_BxD)
    token_B = sampler(logits_BxV, keys_B=example_keys(key, example_index_B, 0))
    tokens_BxN = jnp.zeros((batch_size, num_new), jnp.int32).at[:, 0].set(token_B)
    if model.backend.decode_cache == "per_layer":  # read in place through a switch (models/kv_cache.py)
        cache = cache.per_layer()
    return _DecodeState(
        cache=place_cache(cache, cache_spec),
        tokens_BxN=tokens_BxN,
        position_B=last_position_B + 1,
        done_B=~active_B | _is_eos(token_B, eos_ids),
        step=jnp.asarray(1, jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "sampler", "eos_ids", "pad_id"),
                   donate_argnames=("decode_state",))
def _decode(graphdef, state, decode_state, stop_step, key, example_index_B, *,
            sampler, eos_ids, pad_id):
    """Generates tokens until ``step == stop_step`` or every row is done."""

    def keep_going(s: _DecodeState):
        return (s.step < stop_step) & ~jnp.all(s.done_B)

    def decode_step(s: _DecodeState) -> _DecodeState:
        TRACE_COUNTS["decode_step"] += 1
        model = nnx.merge(graphdef, state)
        last_Bx1 = jax.lax.dynamic_slice_in_dim(s.tokens_BxN, s.step - 1, 1, axis=1)
        logits_Bx1xV, cache = model(last_Bx1, positions_BxT=s.position_B[:, None],
                                    valid_BxT=jnp.ones_like(last_Bx1, bool), cache=s.cache)
        token_B = sampler(logits_Bx1xV[:, -1], keys_B=example_keys(key, example_index_B, s.step))
        token_B = jnp.where(s.done_B, pad_id, token_B)
        tokens_BxN = jax.lax.dynamic_update_slice_in_dim(s.tokens_BxN, token_B[:, None], s.step,
                                                         axis=1)
        return _DecodeState(cache=cache, tokens_BxN=tokens_BxN, position_B=s.position_B + 1,
                            done_B=s.done_B | _is_eos(token_B, eos_ids), step=s.step + 1)

    return jax.lax.while_loop(keep_going, decode_step, decode_state)


def generate(
    model,
    tokenizer,
    prompts: Sequence,
    *,
    max_new_tokens: int,
    sampler: Sampler = Greedy(),
    key: jax.Array | None = None,
    stop_strings: Sequence[str] = (),
    eos_token_ids: Sequence[int] | None = None,
    chat: bool = False,
    batch_size: int | None = None,
    prompt_bucket: int | None = None,
    new_token_bucket: int = 16,
    example_ids: Sequence[int] | None = None,
    mesh=None,
    streams: int | None = None,
) -> GenerationResult:
    """Generates continuations of ``prompts``.

    Arguments:
      model: a ``w2s_jax.models.Transformer`` (its ``config`` gives cache shapes and default EOS).
      tokenizer: a ``transformers`` tokenizer, or None when prompts are token-id lists (then no
        texts are decoded and stop strings are unavailable).
      prompts: strings or token-id lists.
      max_new_tokens: most tokens generated per prompt.
      sampler: next-token strategy, e.g. ``Greedy()`` or ``Temperature(0.7, filters=(TopP(0.9),))``.
      key: PRNG key for sampling (required unless greedy). Example i of the prompt list draws with
        ``fold_in(fold_in(key, i), step)``, so results do not depend on ``batch_size``.
      stop_strings: finish a row when its decoded text contains one of these.
      eos_token_ids: ids that finish a row; default ``model.config.eos_token_ids``.
      chat: apply the tokenizer's chat template to string prompts (one user turn).
      batch_size: prompts per batch (None: all at once); a short last batch is filled up to
        ``batch_size`` with finished dummy rows so that every batch reuses one compiled program.
      prompt_bucket: C, prompts are left-padded to a multiple of C tokens and prefilled C
        tokens at a time (a larger C: fewer, larger steps and more padding). None: `prefill_chunk`
        of the batch size (64 for one row, 16 from four rows up).
      new_token_bucket: the generated-token buffer is ``max_new_tokens`` rounded up to this.
      example_ids: each prompt's identity for sampling keys (default: its index in ``prompts``).
        A caller that reorders prompts (e.g. sorting by length) passes the original indices, so
        every row draws the same tokens however the list is ordered or batched.
      mesh: a ``jax.sharding.Mesh`` from ``w2s_jax.parallel.make_mesh``; rows are split over its
        ("data", "fsdp") axes, so ``batch_size`` must be a multiple of data * fsdp (with
        ``batch_size=None`` the one batch is filled up to a multiple).
      streams: batches generating at once, each on a thread of its own (None:
        ``streams.default_streams``: 2 on a CPU with two or more cores, else 1; more than 1 is
        refused on an accelerator, which runs one program at a time). The results are the same
        for any value.
    Returns:
      a :class:`GenerationResult`.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if stop_strings and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer to decode the generated text")
    if key is None:
        if not isinstance(sampler, Greedy):
            raise ValueError(f"sampler {sampler!r} draws random tokens: pass key=")
        # unused by greedy decoding; made without compiling a seeding program (jax.random.key)
        key = jax.random.wrap_key_data(np.zeros(2, np.uint32), impl="threefry2x32")
    config = model.config
    if eos_token_ids is None:
        eos_token_ids = tuple(config.eos_token_ids or ())
    eos_ids = tuple(int(t) for t in eos_token_ids)
    pad_id = _pad_id(config, eos_ids)
    prompt_ids = encode_prompts(tokenizer, prompts, chat=chat)
    if not prompt_ids:
        return GenerationResult(token_ids=[], texts=[] if tokenizer is not None else None,
                                finish_reasons=[], prompt_token_ids=[])
    rows_per_batch = batch_size or round_up(len(prompt_ids), row_splits(mesh))
    check_rows_divide(rows_per_batch, mesh, what="generate batch_size")
    if prompt_bucket is None:
        prompt_bucket = prefill_chunk(rows_per_batch)
    streams = resolve_streams(streams, mesh, model.backend)

    graphdef, state = nnx.split(model)
    cache_dtype = getattr(model, "dtype", None)
    if cache_dtype is None:
        cache_dtype = _first_float_dtype(state)
    if example_ids is None:
        example_ids = range(len(prompt_ids))
    if len(example_ids) != len(prompt_ids):
        raise ValueError(f"{len(example_ids)} example_ids for {len(prompt_ids)} prompts")
    ids_N = np.asarray(example_ids, dtype=np.int32)

    def run(batch: slice):
        rows = batch.stop - batch.start
        filler_ids = np.arange(rows, rows_per_batch, dtype=np.int32) + ids_N.max(initial=0) + 1
        return _generate_batch(
            graphdef, state, config, tokenizer, prompt_ids[batch], batch_size=rows_per_batch,
            example_index_B=np.concatenate([ids_N[batch], filler_ids]),
            max_new_tokens=max_new_tokens, sampler=sampler, key=key, stop_strings=tuple(stop_strings),
            eos_ids=eos_ids, pad_id=pad_id, prompt_bucket=prompt_bucket,
            new_token_bucket=new_token_bucket, cache_dtype=cache_dtype, mesh=mesh, backend=model.backend,
        )

    batches = batch_slices(len(prompt_ids), batch_size)
    token_ids, finish_reasons, texts = [], [], []
    for ids, reasons, batch_texts in map_batches(run, batches, streams=streams, desc="generate",
                                                 costs=[max(map(len, prompt_ids[b])) for b in batches]):
        token_ids += ids
        finish_reasons += reasons
        texts += batch_texts
    return GenerationResult(
        token_ids=token_ids,
        texts=texts if tokenizer is not None else None,
        finish_reasons=finish_reasons,
        prompt_token_ids=prompt_ids,
    )


def _pad_id(config, eos_ids) -> int:
    if getattr(config, "pad_token_id", None) is not None:
        return int(config.pad_token_id)
    return eos_ids[0] if eos_ids else 0


def _generate_batch(graphdef, state, config, tokenizer, prompt_ids, *, batch_size, example_index_B,
                    max_new_tokens, sampler, key, stop_strings, eos_ids, pad_id, prompt_bucket,
                    new_token_bucket, cache_dtype, mesh, backend):
    num_new = round_up(max_new_tokens, new_token_bucket)
    num_chunks, cache_len = prompt_layout(max(len(p) for p in prompt_ids), num_new, prompt_bucket)
    num_rows = len(prompt_ids)
    filler = [[pad_id]] * (batch_size - num_rows)
    prompt_len = num_chunks * prompt_bucket
    tokens_BxP, valid_BxP = pad_sequences(prompt_ids + filler, length=prompt_len, pad_id=pad_id,
                                          side="left")
    # Prompt slots then empty ones up to the cache length: the array's shape depends on S only.
    tail = ((0, 0), (0, cache_len - prompt_len))
    rows = shard_batch({"tokens_BxS": np.pad(tokens_BxP, tail, constant_values=pad_id),
                        "valid_BxS": np.pad(valid_BxP, tail),
                        "active_B": np.arange(batch_size) < num_rows,
                        "example_index_B": np.asarray(example_index_B, np.int32)}, mesh)
    whole = backend.prefill == "whole"  # one static pass over the prompt slots, no loop
    prefill_args = (graphdef, state, rows["tokens_BxS"], rows["valid_BxS"],
                    None if whole else np.asarray(num_chunks, np.int32), rows["active_B"], key,
                    rows["example_index_B"])
    prefill_kw = dict(sampler=sampler, eos_ids=eos_ids, num_new=num_new, chunk=prompt_len if whole else prompt_bucket,
                      cache_spec=CacheSpec(config, batch_size, cache_len, jnp.dtype(cache_dtype), mesh))
    decode_kw = dict(sampler=sampler, eos_ids=eos_ids, pad_id=pad_id)
    if mesh is None:  # with a mesh, placements decide the programs: compile them at their calls
        _compile_ahead(prefill_args, prefill_kw, decode_kw, decodes=max_new_tokens > 1)
    decode_state = _prefill(*prefill_args, **prefill_kw)
    stopped = {}  # row -> (num_tokens, text) for rows finished by a stop string
    steps_per_call = _STOP_CHECK_EVERY if stop_strings else max_new_tokens
    while True:
        if stop_strings:
            decode_state = mark_stopped(decode_state, tokenizer, stop_strings, eos_ids, stopped,
                                        num_rows)
        step = int(decode_state.step)
        if step >= max_new_tokens or np.asarray(decode_state.done_B).all():
            break
        stop_step = np.asarray(min(step + steps_per_call, max_new_tokens), np.int32)
        decode_state = _decode(graphdef, state, decode_state, stop_step, key, rows["example_index_B"],
                               **decode_kw)
    tokens_BxN = np.asarray(decode_state.tokens_BxN)[:num_rows, :step]
    ids, reasons, texts = [], [], []
    for row in range(tokens_BxN.shape[0]):
        row_ids, reason = trim_after_eos(tokens_BxN[row].tolist(), eos_ids)
        text = None
        if row in stopped:
            num_tokens, text = stopped[row]
            row_ids, reason = row_ids[:num_tokens], "stop"
        elif tokenizer is not None:
            text = tokenizer.decode(row_ids, skip_special_tokens=True)
        ids.append(row_ids)
        reasons.append(reason)
        texts.append(text)
    return ids, reasons, texts


def _compile_ahead(prefill_args, prefill_kw, decode_kw, *, decodes: bool) -> None:
    """Compiles `_prefill` and, when the batch decodes, `_decode` side by side (`compile_ahead`):
    decode is lowered from prefill's output shapes, with the arguments `_generate_batch` passes."""
    graphdef, state, *rows = prefill_args
    sample_key, example_index_B = rows[-2:]

    def lower():
        prefill = _prefill.lower(*prefill_args, **prefill_kw)
        if not decodes:
            return [prefill]
        decode = _decode.lower(graphdef, state, prefill.out_info, np.asarray(0, np.int32), sample_key,
                               example_index_B, **decode_kw)
        return [prefill, decode]

    compile_side_by_side(("generate", graphdef, signature(state), signature(rows), decodes,
                          tuple(sorted(prefill_kw.items())), tuple(sorted(decode_kw.items()))), lower)


def _first_float_dtype(state):
    """Fallback cache dtype: that of the first floating-point parameter."""
    for leaf in jax.tree.leaves(state):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.dtype
    return jnp.float32

