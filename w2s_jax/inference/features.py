"""Last-token features: the final-norm hidden state of each text's last token, for probes.

This is what a `Classifier`'s head reads (`Classifier.features` at the last position) and what
transformers' sequence classifiers score, so a linear probe on these features is a classifier
whose backbone is frozen. Texts are tokenized as a `ClassificationDataset` tokenizes them
(`classification_tokens`), sorted by length and cut into batches, each right-padded to a length
bucket (`batching.geometric_bucket`) and a row bucket (`batching.row_bucket`): one compiled
program per (rows, length) bucket, however many texts. Long sequences run through the scoring
path in chunks (`scoring.sequence_hidden`), so memory stays bounded; only `B x D` float32 values
leave the device.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.inference.batching import (
    batch_slices,
    check_rows_divide,
    geometric_bucket,
    pad_sequences,
    round_up,
    row_bucket,
    row_splits,
)
from w2s_jax.inference.scoring import _pad_id, sequence_hidden
from w2s_jax.inference.streams import map_batches, resolve_streams
from w2s_jax.models.backend import use_backend
from w2s_jax.models.classifier import classification_tokens
from w2s_jax.parallel import shard_batch

MIN_LENGTH = 16  # shortest padded length: short texts share one program
# Trace counters (a Python side effect runs only while tracing): tests count compilations with them.
TRACE_COUNTS: collections.Counter = collections.Counter()


def backbone_of(model):
    """The decoder a model's features come from: a `Classifier`'s backbone, or the model itself."""
    return getattr(model, "backbone", model)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _last_features(graphdef, state, tokens_BxT, valid_BxT, last_B, *, mesh=None):
    """Final-norm hidden states `B x D` (float32) at column `last_B[b]` of each right-padded row."""
    TRACE_COUNTS["last_features"] += 1
    model = nnx.merge(graphdef, state)
    h_BxTxD = sequence_hidden(model, tokens_BxT, valid_BxT, mesh=mesh)
    h_BxD = h_BxTxD[jnp.arange(tokens_BxT.shape[0]), last_B]
    with use_backend(model.backend):
        return model.final_norm(h_BxD).astype(jnp.float32)


def padded_batch(seqs: Sequence[Sequence[int]], *, batch_size: int, pad_id: int, mesh=None,
                 minimum_length: int = MIN_LENGTH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(tokens_BxT, valid_BxT, last_B)`: right-padded rows, filled with one-token dummy rows up to
    the row bucket (a multiple of the mesh's row splits), the length on the geometric grid; `last_B`
    is each row's last real column."""
    rows = round_up(row_bucket(len(seqs), batch_size), row_splits(mesh))
    seqs = list(seqs) + [[pad_id]] * (rows - len(seqs))
    length = geometric_bucket(max(len(s) for s in seqs), minimum=minimum_length)
    tokens_BxT, valid_BxT = pad_sequences(seqs, length=length, pad_id=pad_id, side="right")
    return tokens_BxT, valid_BxT, (valid_BxT.sum(axis=1) - 1).astype(np.int32)


def run_batches(run, seqs: Sequence[Sequence[int]], *, batch_size: int, streams: int, show_progress: bool,
                desc: str) -> tuple[list, list[int]]:
    """`run(indices)` over batches of the sequences' indices sorted longest first (similar lengths
    share a batch): the per-batch results and the row order they come in, so a caller puts
    rows back with `out[order] = results`. Up to `streams` batches at once (`streams.map_batches`,
    with a progress bar when `show_progress`)."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    batches = [order[s] for s in batch_slices(len(order), batch_size)]
    costs = [len(seqs[b[0]]) for b in batches]
    if show_progress:
        parts = map_batches(run, batches, streams=streams, desc=desc, costs=costs)
    elif streams == 1 or len(batches) < 2:
        parts = [run(b) for b in batches]
    else:
        with concurrent.futures.ThreadPoolExecutor(min(streams, len(batches))) as pool:
            parts = list(pool.map(run, batches))
    return parts, [i for b in batches for i in b]


def last_token_features(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16, max_len: int = 512,
                        mesh=None, show_progress: bool = True, add_bos: bool = True,
                        streams: int | None = None) -> np.ndarray:
    """The final-norm hidden state of each text's last token, `(N, D)` float32, in input order.

    Arguments:
      model: a `Transformer`, or a `Classifier` (its backbone's features: what its head reads).
      tokenizer: anything with `encode(text, add_special_tokens=False)` and `bos_token_id`.
      texts: the N texts; each is tokenized as `ClassificationDataset` does (BOS if `add_bos`,
        the last `max_len` tokens), and one that gives no tokens is a ValueError naming it.
      batch_size: most texts per forward pass (on a mesh, a multiple of its data * fsdp).
      mesh: a `jax.sharding.Mesh`: each batch's rows are split over its ("data", "fsdp") axes.
      show_progress: a progress bar over the batches (on a terminal, for more than one batch).
      streams: batches in flight at once (None: `streams.default_streams`).
    """
    backbone = backbone_of(model)
    check_rows_divide(batch_size, mesh, what="features batch_size")
    seqs = [classification_tokens(tokenizer, text, max_len=max_len, add_bos=add_bos, what=f"text {i}")
            for i, text in enumerate(texts)]
    out = np.zeros((len(seqs), backbone.config.hidden_size), np.float32)
    if not seqs:
        return out
    graphdef, state = nnx.split(backbone)
    pad_id = _pad_id(backbone)

    def run(indices: list[int]) -> np.ndarray:
        tokens_BxT, valid_BxT, last_B = padded_batch([seqs[i] for i in indices], batch_size=batch_size,
                                                     pad_id=pad_id, mesh=mesh)
        rows = shard_batch({"tokens_BxT": tokens_BxT, "valid_BxT": valid_BxT}, mesh)
        features = _last_features(graphdef, state, rows["tokens_BxT"], rows["valid_BxT"], last_B, mesh=mesh)
        return np.asarray(features)[: len(indices)]

    streams = resolve_streams(streams, mesh, backbone.backend)
    parts, order = run_batches(run, seqs, batch_size=batch_size, streams=streams, show_progress=show_progress,
                               desc="features")
    out[order] = np.concatenate(parts)
    return out


def classifier_probs(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16, max_len: int = 512,
                     mesh=None, show_progress: bool = True, add_bos: bool = True,
                     streams: int | None = None) -> np.ndarray:
    """A `Classifier`'s class probabilities for each text, `(N, C)` float32 rows summing to 1:
    softmax(f W + b) on its `last_token_features` f (float32), what the classifier predicts for a
    left-padded batch of the texts (`Classifier.__call__`). Arguments as `last_token_features`."""
    if not hasattr(model, "score_kernel"):
        raise ValueError(f"classifier_probs needs a Classifier (a model with a classification head), "
                         f"got a {type(model).__name__}")
    f_NxD = last_token_features(model, tokenizer, texts, batch_size=batch_size, max_len=max_len, mesh=mesh,
                                show_progress=show_progress, add_bos=add_bos, streams=streams)
    W = np.asarray(jax.device_get(model.score_kernel.get_value()), np.float32)
    b = np.asarray(jax.device_get(model.score_bias.get_value()), np.float32)
    logits_NxC = f_NxD @ W + b
    probs_NxC = np.exp(logits_NxC - logits_NxC.max(axis=1, keepdims=True))
    return probs_NxC / probs_NxC.sum(axis=1, keepdims=True)
