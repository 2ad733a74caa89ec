"""The concept world: K latent concepts, each a random map from inputs X to outputs Y.

A concept k is a table ``f_k: X -> Y`` drawn uniformly at random. A pre-training document picks a
concept ``k ~ alpha`` and lists ``pairs_per_document`` distinct inputs with their outputs under
``f_k``, each output replaced by a uniformly random output token with probability ``noise``
(pre-training label noise, the analogue of the theory's sigma > 0). Documents use the pipeline's
demonstration format (``w2s_jax.tasks.demonstrations``)::

    Question: x5
    Answer: y12

    Question: x17
    Answer: y3

so the in-context prompts of ``icl-refine`` are in-distribution for a model pre-trained on them.
Tokens are whole words: ``Question:``, ``Answer:``, ``x0 .. x{|X|-1}``, ``y0 .. y{|Y|-1}``, and
the special tokens ``<pad> <s> </s> <unk>`` (ids 0-3); :func:`save_tokenizer` writes them as a
``tokenizers`` word-level ``tokenizer.json`` that ``w2s generate/score`` and the pipeline load.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from w2s_jax.tasks.demonstrations import demonstration

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FORMAT_TOKENS = ("Question:", "Answer:")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """The world's sizes, prior and noise (the concept-world file's ``[world]`` table)."""

    num_concepts: int = 6  # K latent concepts
    num_inputs: int = 96  # |X|
    num_outputs: int = 16  # |Y|
    alpha: tuple[float, ...] = ()  # prior over concepts (normalised); () = uniform
    pairs_per_document: int = 12  # (x, y) pairs per pre-training document
    noise: float = 0.2  # eps: probability that a document's output is replaced by a uniform one
    seed: int = 0  # the concept tables and every pre-training document are drawn from this

    def __post_init__(self):
        for name in ("num_concepts", "num_inputs", "num_outputs", "pairs_per_document"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise ValueError(f"world.{name} must be an int >= 2, got {value!r}")
        if self.pairs_per_document > self.num_inputs:
            raise ValueError(f"world.pairs_per_document = {self.pairs_per_document} exceeds "
                             f"world.num_inputs = {self.num_inputs} (a document's inputs are distinct)")
        if not isinstance(self.noise, (int, float)) or not 0 <= self.noise < 1:
            raise ValueError(f"world.noise must be in [0, 1), got {self.noise!r}")
        if isinstance(self.alpha, list):
            object.__setattr__(self, "alpha", tuple(self.alpha))
        if self.alpha and (len(self.alpha) != self.num_concepts or min(self.alpha) <= 0):
            raise ValueError(f"world.alpha must be {self.num_concepts} positive weights (one per concept) "
                             f"or empty for uniform, got {list(self.alpha)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"world.seed must be an int >= 0, got {self.seed!r}")


class World:
    """The concept tables, prior and noise of one :class:`WorldConfig`.

    Arguments:
      config: the world's settings; the tables are a pure function of ``config``.
    """

    def __init__(self, config: WorldConfig):
        self.config = config
        rng = np.random.default_rng([config.seed, 0])
        self.tables_KxX = rng.integers(0, config.num_outputs, size=(config.num_concepts, config.num_inputs))
        alpha = np.asarray(config.alpha or [1.0] * config.num_concepts, np.float64)
        self.alpha_K = alpha / alpha.sum()

    @property
    def num_concepts(self) -> int:
        return self.config.num_concepts

    @property
    def noise(self) -> float:
        return self.config.noise

    def input_token(self, x: int) -> str:
        """The word of input ``x``."""
        return f"x{x}"

    def output_token(self, y: int) -> str:
        """The word of output ``y``."""
        return f"y{y}"

    def parse_input(self, word: str) -> int:
        """The input index of a word ``x<i>``; ValueError otherwise."""
        return _parse(word, "x", self.config.num_inputs)

    def parse_output(self, word: str) -> int | None:
        """The output index of a word ``y<i>``, or None for anything else."""
        try:
            return _parse(word, "y", self.config.num_outputs)
        except ValueError:
            return None

    def vocabulary(self) -> list[str]:
        """Every token, in id order (special tokens first)."""
        return [*SPECIAL_TOKENS, *FORMAT_TOKENS,
                *(self.input_token(x) for x in range(self.config.num_inputs)),
                *(self.output_token(y) for y in range(self.config.num_outputs))]

    def sample_documents(self, num: int, *, stream: int) -> list[str]:
        """``num`` pre-training documents, a pure function of the world's seed and ``stream``."""
        c = self.config
        rng = np.random.default_rng([c.seed, 1, stream])
        concepts = rng.choice(c.num_concepts, size=num, p=self.alpha_K)
        docs = []
        for k in concepts:
            xs = rng.permutation(c.num_inputs)[: c.pairs_per_document]
            ys = self.tables_KxX[k, xs].copy()
            flip = rng.random(len(xs)) < c.noise
            ys[flip] = rng.integers(0, c.num_outputs, size=int(flip.sum()))
            docs.append(document(self, xs, ys))
        return docs


def document(world: World, xs, ys) -> str:
    """The pairs in the pipeline's demonstration format, joined by blank lines."""
    return "\n\n".join(demonstration(world.input_token(int(x)), world.output_token(int(y)))
                       for x, y in zip(xs, ys))


def _parse(word: str, prefix: str, size: int) -> int:
    word = word.strip()
    if not (word.startswith(prefix) and word[1:].isdigit() and int(word[1:]) < size):
        raise ValueError(f"{word!r} is not a token {prefix}0 .. {prefix}{size - 1}")
    return int(word[1:])


def save_tokenizer(world: World, directory: str | Path) -> Path:
    """Writes the world's word-level tokenizer (``tokenizer.json`` + config) into ``directory``.

    Words are split on whitespace (so ``Question:`` is one token) and ``<s>`` is prepended to every
    encoded text, as for a Llama base model; decoding joins words with spaces.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(world.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", BOS_ID)])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(directory))
    return Path(directory)
