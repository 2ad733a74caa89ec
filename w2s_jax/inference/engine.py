"""One model, many prompts: the labelling engine the weak-to-strong pipeline calls.

Labelling a training set is one call over a list (the offline ``LLM.generate(prompts)`` pattern):
the engine renders each :class:`Prompt` (plain text, or the model's chat template with an optional
system message), sorts the rows by token length so each batch holds prompts of similar length,
generates or scores them with :func:`~w2s_jax.inference.generate` / :func:`~w2s_jax.inference.score`
in fixed-size batches whose lengths are padded to coarse buckets (so compiled programs are reused
from batch to batch), and returns results in the caller's order. Sampling keys follow each row's
position in the caller's list, so the result does not depend on the sort or the batch size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from w2s_jax.inference.batching import check_rows_divide
from w2s_jax.inference.generation import generate
from w2s_jax.inference.sampling import Greedy, Sampler
from w2s_jax.inference.scoring import ScoreResult, score
from w2s_jax.inference.streams import resolve_streams
from w2s_jax.inference.topk import TopKResult, next_token_topk
from w2s_jax.parallel import shard_model


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A request: the user turn, optionally with a system message.

    Without a chat template (``Engine(chat=False)``) it renders as ``system + "\\n\\n" + user``.
    """

    user: str
    system: str | None = None

    def as_text(self) -> str:
        """The plain-text rendering (no chat template)."""
        return self.user if not self.system else f"{self.system}\n\n{self.user}"

    def as_messages(self) -> list[dict[str, str]]:
        """The chat rendering: an optional system message and one user message."""
        messages = [] if not self.system else [{"role": "system", "content": self.system}]
        return messages + [{"role": "user", "content": self.user}]


def _check_on_mesh(model, mesh, name: str) -> None:
    """Raises a ValueError unless every parameter of ``model`` lives on ``mesh``'s devices."""
    devices = set(mesh.devices.flat)
    for path, node in nnx.iter_graph(model):
        value = node.get_value() if isinstance(node, nnx.Variable) else None
        if isinstance(value, jax.Array) and set(value.sharding.device_set) != devices:
            raise ValueError(
                f"{name}: parameter {'.'.join(map(str, path))} is on {len(value.sharding.device_set)} "
                f"device(s), not on the mesh's {len(devices)}: load the model with "
                f"load_pretrained(..., mesh=mesh, rules=rules), or pass Engine(..., rules=) to place it")


def as_prompt(item: Prompt | str) -> Prompt:
    """A :class:`Prompt` from a prompt or a plain string."""
    return item if isinstance(item, Prompt) else Prompt(user=str(item))


class Engine:
    """A loaded model and its tokenizer, answering lists of prompts in length-sorted batches.

    Arguments:
      model: a ``w2s_jax.models.Transformer``.
      tokenizer: its ``transformers`` tokenizer.
      chat: render prompts with the tokenizer's chat template (an instruct model).
      batch_size: rows per compiled batch.
      length_bucket: generation prefills prompts this many tokens at a time (prompts are padded
        to a multiple of it) and scoring pads lengths to a multiple of it; compiled programs
        depend on coarser cache-length buckets, so batches of different lengths share them.
      name: shown in progress bars and errors.
      mesh: a ``jax.sharding.Mesh`` (``w2s_jax.parallel.make_mesh``): generation splits each
        batch's rows over the mesh's ("data", "fsdp") axes. ``batch_size`` must then be a
        multiple of data * fsdp (a ValueError names the nearest valid sizes: rounding up in
        silence would change the memory each device needs).
      rules: ``w2s_jax.parallel.ShardingRules``: place the model's parameters on ``mesh``
        under these rules (in place). None: the model is used as placed, which must be on
        ``mesh`` already (``load_pretrained(..., mesh=, rules=)`` or ``shard_model``).
      streams: batches in flight at once (generation, scoring, top-k), each on a thread of its
        own (None: 2 on a CPU with two or more cores, else 1; `streams.py`).
    """

    def __init__(self, model, tokenizer, *, chat: bool = False, batch_size: int = 16,
                 length_bucket: int = 64, name: str = "model", mesh=None, rules=None,
                 streams: int | None = None):
        if batch_size < 1:
            raise ValueError(f"Engine batch_size must be >= 1, got {batch_size}")
        if chat and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"{name}: chat=True but its tokenizer has no chat template")
        check_rows_divide(batch_size, mesh, what=f"{name}: Engine batch_size")
        if mesh is not None and rules is not None:
            shard_model(model, mesh, rules)
        elif mesh is not None:
            _check_on_mesh(model, mesh, name)
        self.model, self.tokenizer, self.chat = model, tokenizer, chat
        self.batch_size, self.length_bucket, self.name = batch_size, length_bucket, name
        self.mesh, self.streams = mesh, resolve_streams(streams, mesh, getattr(model, "backend", None))

    def render(self, prompt: Prompt | str) -> str:
        """The prompt as the text the model reads (chat template applied when ``chat``)."""
        prompt = as_prompt(prompt)
        if not self.chat:
            return prompt.as_text()
        return self.tokenizer.apply_chat_template(prompt.as_messages(), add_generation_prompt=True,
                                                  tokenize=False)

    def encode(self, prompts: Sequence[Prompt | str]) -> list[list[int]]:
        """Token ids of each rendered prompt (BOS added as the tokenizer does; the chat template
        brings its own special tokens)."""
        if not prompts:
            return []
        # one call for the whole list: the tokenizer encodes it in one batch (the same ids as one
        # call per prompt, with less Python around each)
        encoded = self.tokenizer([self.render(p) for p in prompts], add_special_tokens=not self.chat)["input_ids"]
        out = [list(ids) for ids in encoded]
        for index, ids in enumerate(out):
            if not ids:
                raise ValueError(f"{self.name}: prompt {index} encodes to no tokens: {prompts[index]!r}")
        return out

    def _order(self, lengths: Sequence[int]) -> np.ndarray:
        return np.argsort(np.asarray(lengths), kind="stable")

    def generate(self, prompts: Sequence[Prompt | str], *, max_new_tokens: int,
                 sampler: Sampler = Greedy(), key: jax.Array | None = None,
                 stop_strings: Sequence[str] = (), example_ids: Sequence[int] | None = None) -> list[str]:
        """The generated text of each prompt, in order (see :func:`~w2s_jax.inference.generate`).

        ``example_ids`` (int32 values) name each prompt's sampling key, ``fold_in(key, id)``;
        by default a prompt's position in ``prompts``. A caller that labels a list in pieces
        passes ids that do not depend on the piece (e.g. a hash of the request)."""
        if not prompts:
            return []
        if example_ids is None:
            example_ids = range(len(prompts))
        if len(example_ids) != len(prompts):
            raise ValueError(f"{len(example_ids)} example_ids for {len(prompts)} prompts")
        ids = self.encode(prompts)
        order = self._order([len(x) for x in ids])
        result = generate(self.model, self.tokenizer, [ids[i] for i in order],
                          max_new_tokens=max_new_tokens, sampler=sampler, key=key,
                          stop_strings=tuple(stop_strings), batch_size=self.batch_size,
                          prompt_bucket=self.length_bucket, mesh=self.mesh, streams=self.streams,
                          example_ids=[int(example_ids[i]) for i in order])
        texts: list[str] = [""] * len(prompts)
        for position, index in enumerate(order):
            texts[index] = result.texts[position]
        return texts

    def score(self, prompts: Sequence[Prompt | str], completions: Sequence[str]) -> list[ScoreResult]:
        """``log p(completion | rendered prompt)`` per pair, completions tokenized on their own
        (as :class:`~w2s_jax.train.SFTDataset` tokenizes training rows)."""
        return self._over_pairs(prompts, completions, lambda p, c: score(
            self.model, None, p, c, batch_size=self.batch_size, length_bucket=self.length_bucket,
            mesh=self.mesh, streams=self.streams))

    def next_token_topk(self, prompts: Sequence[Prompt | str], completions: Sequence[str],
                        k: int) -> list[TopKResult]:
        """The model's top-k next-token distribution (renormalised over the k) at each completion
        token given the rendered prompt, per pair, in order; completions are tokenized on their
        own, as in :meth:`score` and :class:`~w2s_jax.train.SFTDataset`, so row j of a result is
        the target for completion token j of a training row."""
        return self._over_pairs(prompts, completions, lambda p, c: next_token_topk(
            self.model, p, c, k, batch_size=self.batch_size, length_bucket=self.length_bucket,
            mesh=self.mesh, streams=self.streams))

    def _over_pairs(self, prompts, completions, run) -> list:
        """``run(prompt_ids, completion_ids)`` over the pairs sorted by length, results in order."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if not prompts:
            return []
        prompt_ids = self.encode(prompts)
        completion_ids = [list(self.tokenizer.encode(c, add_special_tokens=False)) for c in completions]
        for index, ids in enumerate(completion_ids):
            if not ids:
                raise ValueError(f"{self.name}: completion {index} encodes to no tokens: "
                                 f"{completions[index]!r}")
        order = self._order([len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)])
        results = run([prompt_ids[i] for i in order], [completion_ids[i] for i in order])
        out: list = [None] * len(prompts)
        for position, index in enumerate(order):
            out[index] = results[position]
        return out
