"""Zero-shot and in-context binary classification by two answer tokens.

For a prompt x and label texts (l_0, l_1) (e.g. " No", " Yes") the model's next-token
distribution after x is read at the first token t_c of each label text, and renormalised over the
two: p(class c | x) = p(t_c | x) / (p(t_0 | x) + p(t_1 | x)). A label's first token is the one
that follows the prompt's tokens when prompt + label is tokenized whole, so a tokenizer that
marks word starts (sentencepiece's "▁") yields the token the model would emit there. A label
text that gives no token after the prompt, or merges with the prompt's last token (then the two
labels would not share one context), is a ValueError naming the prompt, as is a pair of labels
starting with the same token (the two classes could not be told apart).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.inference.batching import check_rows_divide
from w2s_jax.inference.features import padded_batch, run_batches
from w2s_jax.inference.scoring import _pad_id, _short, sequence_hidden
from w2s_jax.inference.streams import resolve_streams
from w2s_jax.parallel import shard_batch


def _ids(tokenizer, text: str) -> list[int]:
    return [int(t) for t in tokenizer(text, add_special_tokens=True)["input_ids"]]


def label_tokens(tokenizer, prompt: str, label_texts: Sequence[str], index: int = 0) -> tuple[list[int], list[int]]:
    """(the prompt's token ids, the first token id of each label text after it); see the module
    docstring for the ValueErrors, each naming prompt `index`."""
    context = _ids(tokenizer, prompt)
    if not context:
        raise ValueError(f"prompt {index} ({_short(prompt)}) gives no tokens: nothing to predict the label from")
    firsts = []
    for label in label_texts:
        full = _ids(tokenizer, prompt + label)
        if full[: len(context)] != context:
            raise ValueError(f"label text {label!r} merges with the last token of prompt {index} "
                             f"({_short(prompt)}): the labels would not follow the same context; end the prompt "
                             "at a token boundary or start the label texts with a space")
        if len(full) == len(context):
            raise ValueError(f"label text {label!r} gives no tokens after prompt {index} ({_short(prompt)})")
        firsts.append(full[len(context)])
    if len(set(firsts)) < len(firsts):
        raise ValueError(f"label texts {tuple(label_texts)} start with the same token(s) {firsts} after prompt "
                         f"{index} ({_short(prompt)}): the classes cannot be told apart by their first token; "
                         "use label texts whose first tokens differ")
    return context, firsts


@functools.partial(jax.jit, static_argnames=("mesh",))
def _label_logprobs(graphdef, state, tokens_BxT, valid_BxT, last_B, label_ids_BxC, *, mesh=None):
    """log p(label_ids_BxC[b, c] | row b), `B x C` float32, under the full next-token softmax at
    column `last_B[b]` of each right-padded row."""
    model = nnx.merge(graphdef, state)
    h_BxTxD = sequence_hidden(model, tokens_BxT, valid_BxT, mesh=mesh)
    logits_BxV = model.unembed(h_BxTxD[jnp.arange(tokens_BxT.shape[0]), last_B])
    picked_BxC = jnp.take_along_axis(logits_BxV, label_ids_BxC, axis=-1)
    return picked_BxC - jax.nn.logsumexp(logits_BxV, axis=-1, keepdims=True)


def label_token_logprobs(model, tokenizer, prompts: Sequence[str], *, label_texts: Sequence[str] = (" No", " Yes"),
                         batch_size: int = 8, mesh=None, streams: int | None = None,
                         show_progress: bool = True) -> np.ndarray:
    """log p(first token of label text c | prompt n) under the model's full next-token
    distribution, `(N, C)` float64 (C = len(label_texts)). Arguments as `label_token_probs`."""
    if getattr(model, "backbone", None) is not None:
        raise ValueError("label token probabilities need a language model's next-token distribution; a "
                         "Classifier's head has none: pass its backbone or the base model")
    if len(label_texts) < 2:
        raise ValueError(f"need at least two label texts, got {tuple(label_texts)}")
    check_rows_divide(batch_size, mesh, what="label_token_probs batch_size")
    pairs = [label_tokens(tokenizer, prompt, label_texts, i) for i, prompt in enumerate(prompts)]
    out = np.zeros((len(pairs), len(label_texts)), np.float64)
    if not pairs:
        return out
    graphdef, state = nnx.split(model)
    pad_id = _pad_id(model)

    def run(indices: list[int]) -> np.ndarray:
        tokens_BxT, valid_BxT, last_B = padded_batch([pairs[i][0] for i in indices], batch_size=batch_size,
                                                     pad_id=pad_id, mesh=mesh)
        label_ids_BxC = np.zeros((len(tokens_BxT), len(label_texts)), np.int32)
        label_ids_BxC[: len(indices)] = [pairs[i][1] for i in indices]
        rows = shard_batch({"tokens_BxT": tokens_BxT, "valid_BxT": valid_BxT}, mesh)
        logprobs = _label_logprobs(graphdef, state, rows["tokens_BxT"], rows["valid_BxT"], last_B, label_ids_BxC,
                                   mesh=mesh)
        return np.asarray(logprobs, np.float64)[: len(indices)]

    parts, order = run_batches(run, [context for context, _ in pairs], batch_size=batch_size,
                               streams=resolve_streams(streams, mesh, model.backend), show_progress=show_progress,
                               desc="label tokens")
    out[order] = np.concatenate(parts)
    return out


def label_token_probs(model, tokenizer, prompts: Sequence[str], *, label_texts: Sequence[str] = (" No", " Yes"),
                      batch_size: int = 8, mesh=None, streams: int | None = None,
                      show_progress: bool = True) -> np.ndarray:
    """The model's next-token distribution after each prompt restricted to the first token of each
    label text and renormalised: `(N, C)` float64 rows summing to 1; column c is class c (with the
    default labels, column 1 is the probability of "Yes").

    Arguments:
      model: a `Transformer` (a language model: its LM head gives the next-token distribution).
      tokenizer: a `transformers` tokenizer; prompts are tokenized with its special tokens.
      prompts: the N prompts (zero-shot questions, or in-context examples followed by the query).
      label_texts: the text of each class as it would follow the prompt (C >= 2).
      batch_size: most prompts per forward pass (on a mesh, a multiple of its data * fsdp).
      mesh: a `jax.sharding.Mesh`: each batch's rows are split over its ("data", "fsdp") axes.
      streams: batches in flight at once (None: `streams.default_streams`).
      show_progress: a progress bar over the batches (on a terminal, for more than one batch).
    """
    logprobs = label_token_logprobs(model, tokenizer, prompts, label_texts=label_texts, batch_size=batch_size,
                                    mesh=mesh, streams=streams, show_progress=show_progress)
    if not len(logprobs):
        return logprobs
    shifted = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
