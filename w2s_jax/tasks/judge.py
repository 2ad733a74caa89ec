"""The judge: a local model that rates answers against a rubric, through the same :class:`Engine`.

Two modes (the experiment's ``[judge]`` table, :class:`JudgeOptions`):

- ``"generate"``: the judge writes a short explanation and a rating in the form ``[[x]]``,
  ``samples`` times per item (sampled at ``temperature``). A judgement's rating is the *first*
  ``[[number]]`` it writes (MT-Bench's rule; a model that keeps writing after its verdict invents
  more text, not a better verdict); brackets around non-numbers (``[[rating]]``) are skipped.
  Decimals are allowed. A judgement with no numeric ``[[x]]``, or whose first one lies outside the
  scale, is *malformed*: dropped and counted. The score is the mean of the valid samples, None when
  every sample is malformed.
- ``"expected"``: no sampling. The judge is asked for its rating only, and each candidate reply
  ``Rating: [[v]]`` for the integers ``v`` of the scale is scored with ``engine.score``; the score is
  ``sum_v v * p(v)`` with ``p`` the replies' probabilities normalised over the candidates. The closing
  ``]]`` is part of each candidate, so ``"1"`` and ``"10"`` are distinct events however the tokenizer
  splits ``10`` (scoring only ``Rating: [[1`` would count every ``10`` as a ``1`` too). The prefix
  ``Rating: [[`` is part of the reply, not the prompt, so a chat judge reads it as its own turn.
  ``Rating.probs`` holds ``p``.

Randomness: the sampling key of each (item, sample) is ``fold_in(key, id)`` with ``id`` a hash of
the rubric, question, answer and sample number, so a rating depends on the item alone, not on
which other items share the call (the pipeline scores a split in chunks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Sequence

import numpy as np

from w2s_jax.inference.engine import Engine, Prompt

MODES = ("generate", "expected")
_RATING = re.compile(r"\[\[\s*([^\[\]]*?)\s*\]\]")
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class JudgeOptions:
    """How the judge rates (the experiment's ``[judge]`` table)."""

    mode: str = "generate"  # "generate" (sampled explanations + [[x]]) or "expected" (probability-weighted)
    samples: int = 3  # judgements per item in "generate" mode
    max_new_tokens: int = 256  # per judgement in "generate" mode
    temperature: float | None = None  # None: 0.7 when samples > 1, else 0 (greedy)
    scale: tuple[int, int] = (1, 10)  # lowest and highest rating (integers)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"judge.mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"judge.samples must be an int >= 1, got {self.samples!r}")
        if (isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int)
                or self.max_new_tokens < 1):
            raise ValueError(f"judge.max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        scale = tuple(self.scale) if isinstance(self.scale, (list, tuple)) else self.scale
        if (not isinstance(scale, tuple) or len(scale) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in scale)
                or not scale[0] < scale[1] or scale[1] - scale[0] > 100):
            raise ValueError(f"judge.scale must be two integers [low, high] with low < high and at most "
                             f"101 values, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)
        temperature = self.temperature
        if temperature is None:
            temperature = 0.7 if self.samples > 1 else 0.0
        if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                or not 0 <= temperature < math.inf):
            raise ValueError(f"judge.temperature must be a finite number >= 0, got {temperature!r}")
        if self.mode == "generate" and self.samples > 1 and temperature == 0:
            raise ValueError(f"judge.samples = {self.samples} with temperature 0 repeats one greedy "
                             "judgement; set temperature > 0 or samples = 1")
        object.__setattr__(self, "temperature", float(temperature))


@dataclasses.dataclass(frozen=True)
class Rating:
    """The judge's verdict on one item.

    Attributes:
      score: the mean valid sample ("generate") or the expected rating ("expected"); None when
        every sample was malformed.
      samples: the valid sampled ratings, in sample order ("generate"; empty for "expected").
      malformed: how many samples had no valid ``[[x]]`` rating.
      probs: "expected" mode: the probability of each rating of the scale, lowest first.
    """

    score: float | None
    samples: list[float]
    malformed: int
    probs: tuple[float, ...] | None = None


def parse_rating(text: str, scale: tuple[int, int]) -> float | None:
    """The first ``[[number]]`` of a judgement if it lies in ``scale``, else None (malformed)."""
    for match in _RATING.finditer(text):
        if _DECIMAL.fullmatch(match.group(1)):
            value = float(match.group(1))
            return value if scale[0] <= value <= scale[1] else None
    return None


def judge_prompt(rubric: str, question: str, answer: str, *, scale: tuple[int, int],
                 mode: str) -> Prompt:
    """The judge's request (MT-Bench's single-answer grading layout)."""
    low, high = scale
    if mode == "generate":
        how = (f"Begin with a short explanation. Then give your rating, a number from {low} to {high}, "
               f'in exactly this form: "Rating: [[{(low + high) // 2}]]".')
    else:
        how = (f'Reply with your rating only, a whole number from {low} to {high}, in exactly this '
               f'form: "Rating: [[{(low + high) // 2}]]".')
    user = (f"Please act as an impartial judge and rate the response to the question below.\n"
            f"{rubric.strip()}\n{how}\n\n"
            f"[Question]\n{question.strip()}\n\n"
            f"[The Start of the Response]\n{answer.strip()}\n[The End of the Response]\n")
    return Prompt(user=user)


def item_id(rubric: str, question: str, answer: str, sample: int) -> int:
    """A 31-bit id of one judgement, the sampling-key fold-in (stable across runs and machines)."""
    digest = hashlib.sha256(json.dumps([rubric, question, answer, sample]).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class Judge:
    """Rates answers with a local model.

    Arguments:
      engine: the judge model (:class:`~w2s_jax.inference.Engine`; ``chat=True`` for an instruct model).
      options: :class:`JudgeOptions` (default: ``JudgeOptions()``).
      key: PRNG key for sampled judgements (required when ``temperature > 0`` in "generate" mode).
    """

    def __init__(self, engine: Engine, options: JudgeOptions | None = None, key=None):
        self.engine, self.options, self.key = engine, options or JudgeOptions(), key
        o = self.options
        if o.mode == "generate" and o.temperature > 0 and key is None:
            raise ValueError("a judge that samples (temperature > 0) needs a PRNG key")

    def rate(self, rubric: str, question: str, answer: str) -> Rating:
        """One item's :class:`Rating` (see :meth:`rate_many`)."""
        return self.rate_many([(rubric, question, answer)])[0]

    def rate_many(self, items: Sequence[tuple[str, str, str]]) -> list[Rating]:
        """Ratings of ``(rubric, question, answer)`` items, in order, in one batched engine call.

        An empty answer is rated like any other (the judge sees an empty response)."""
        items = [tuple(item) for item in items]
        for index, item in enumerate(items):
            if len(item) != 3 or not all(isinstance(part, str) for part in item):
                raise TypeError(f"judge item {index} must be (rubric, question, answer) strings, got {item!r}")
        if not items:
            return []
        if self.options.mode == "generate":
            return self._generated(items)
        return self._expected(items)

    def _generated(self, items) -> list[Rating]:
        o = self.options
        prompts, ids = [], []
        for rubric, question, answer in items:
            prompt = judge_prompt(rubric, question, answer, scale=o.scale, mode="generate")
            for sample in range(o.samples):
                prompts.append(prompt)
                ids.append(item_id(rubric, question, answer, sample))
        from w2s_jax.inference import make_sampler

        texts = self.engine.generate(prompts, max_new_tokens=o.max_new_tokens,
                                     sampler=make_sampler(temperature=o.temperature), key=self.key,
                                     example_ids=ids)
        ratings = []
        for i in range(len(items)):
            parsed = [parse_rating(t, o.scale) for t in texts[i * o.samples:(i + 1) * o.samples]]
            valid = [v for v in parsed if v is not None]
            ratings.append(Rating(score=float(np.mean(valid)) if valid else None, samples=valid,
                                  malformed=len(parsed) - len(valid)))
        return ratings

    def _expected(self, items) -> list[Rating]:
        values = np.arange(self.options.scale[0], self.options.scale[1] + 1)
        prompts, replies = [], []
        for rubric, question, answer in items:
            prompt = judge_prompt(rubric, question, answer, scale=self.options.scale, mode="expected")
            prompts += [prompt] * len(values)
            replies += [f"Rating: [[{v}]]" for v in values]
        scores = self.engine.score(prompts, replies)
        logp_NxK = np.array([s.sum_logprob for s in scores], np.float64).reshape(len(items), len(values))
        probs_NxK = np.exp(logp_NxK - logp_NxK.max(axis=1, keepdims=True))
        probs_NxK /= probs_NxK.sum(axis=1, keepdims=True)
        return [Rating(score=float(probs_K @ values), samples=[], malformed=0, probs=tuple(probs_K.tolist()))
                for probs_K in probs_NxK]
