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

- ``"joint"`` (Somerstep et al., ICLR 2025): one request returns every rating of an item at once
  (``Content Rating: [[x]] Style Rating: [[y]]``), ``samples`` times at ``temperature``; the task
  writes the request (its ``judge_system``/``judge_user`` options). Each sample's ratings are every
  ``[[integer]]`` it holds, in order (the paper's parser: no range check). The vote filter
  (:func:`vote`) keeps the samples whose number of ratings equals the ``count_rule`` statistic of
  the samples' counts (``"median"``, the paper's code, or ``"mode"``) and averages them rating by
  rating. An item *fails* (score None, dropped by the report) when no sample is kept or the kept
  count is not the number of ratings asked for. The same mode scores a math answer against the
  true solution (task ``math`` with ``metric = "judge"``: one rating, 1 or 0).

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

MODES = ("generate", "expected", "joint")
COUNT_RULES = ("median", "mode")
_RATING = re.compile(r"\[\[\s*([^\[\]]*?)\s*\]\]")
_INTEGER_RATING = re.compile(r"\[\[([0-9]+)\]\]")  # the paper's parser: digits only, no spaces
# The default request of the rubric modes (MT-Bench's single-answer grading layout).
REQUEST = ("Please act as an impartial judge and rate the response to the question below.\n{rubric}\n{how}\n\n"
           "[Question]\n{question}\n\n[The Start of the Response]\n{answer}\n[The End of the Response]\n")
HOW_GENERATE = ("Begin with a short explanation. Then give your rating, a number from {low} to {high}, in "
                'exactly this form: "Rating: [[{mid}]]".')
HOW_EXPECTED = 'Reply with your rating only, a whole number from {low} to {high}, in exactly this form: "Rating: [[{mid}]]".'
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class JudgeOptions:
    """How the judge rates (the experiment's ``[judge]`` table)."""

    mode: str = "generate"  # "generate" (sampled explanations + [[x]]) or "expected" (probability-weighted)
    samples: int = 3  # judgements per item in "generate" mode
    max_new_tokens: int = 256  # per judgement in "generate" mode
    temperature: float | None = None  # None: 0.7 when samples > 1, else 0 (greedy)
    scale: tuple[int, int] = (1, 10)  # lowest and highest rating (integers)
    count_rule: str = "median"  # "joint": keep the samples with the median ("median") or modal ("mode") count of ratings
    remove_from_answer: str = ""  # "joint": text deleted from each answer before judging ("Answer:" in the paper)
    request: str = REQUEST  # "generate"/"expected": the request, {rubric} {how} {question} {answer}
    how_generate: str = HOW_GENERATE  # "generate": how to answer, {low} {high} {mid}
    how_expected: str = HOW_EXPECTED  # "expected": how to answer, {low} {high} {mid}

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
        if self.count_rule not in COUNT_RULES:
            raise ValueError(f"judge.count_rule must be one of {COUNT_RULES}, got {self.count_rule!r}")
        for name, keys in (("request", ("rubric", "how", "question", "answer")),
                           ("how_generate", ("low", "high", "mid")), ("how_expected", ("low", "high", "mid"))):
            value = getattr(self, name)
            try:
                value.format(**{k: "" for k in keys})
            except (AttributeError, KeyError, IndexError, ValueError) as error:
                raise ValueError(f"judge.{name} must be a string with placeholders among "
                                 f"{', '.join('{' + k + '}' for k in keys)}: {error!r}") from None
        if not isinstance(self.remove_from_answer, str):
            raise ValueError(f"judge.remove_from_answer must be a string, got {self.remove_from_answer!r}")
        if self.mode != "expected" and self.samples > 1 and temperature == 0:
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


def parse_ratings(text: str) -> list[int]:
    """Every ``[[integer]]`` of a judgement, in order (the paper's ``RetrieveNumbersInBrackets``)."""
    return [int(number) for number in _INTEGER_RATING.findall(text)]


def vote(samples: Sequence[Sequence[int]], num_ratings: int, rule: str = "median") -> tuple[float, ...] | None:
    """The joint judgement of one item from its sampled rating lists.

    Keeps the samples whose length equals the median (``rule="median"``) or the most frequent
    (``"mode"``; a tie goes to ``num_ratings`` if it is among the most frequent, else the item
    fails) of the samples' lengths, and returns their rating-by-rating mean; None (the item fails)
    when no sample is kept (an even split has a median no sample has) or the kept length is not
    ``num_ratings``.
    """
    counts = [len(sample) for sample in samples]
    if not counts:
        return None
    if rule == "median":
        target = float(np.median(counts))
    elif rule == "mode":
        tally = {c: counts.count(c) for c in counts}
        top = [c for c, n in tally.items() if n == max(tally.values())]
        target = num_ratings if num_ratings in top else (top[0] if len(top) == 1 else None)
    else:
        raise ValueError(f"count rule must be one of {COUNT_RULES}, got {rule!r}")
    kept = [list(sample) for sample in samples if target is not None and len(sample) == target]
    if not kept or len(kept[0]) != num_ratings:
        return None
    return tuple(float(v) for v in np.mean(np.asarray(kept, np.float64), axis=0))


@dataclasses.dataclass(frozen=True)
class JointRating:
    """A joint judgement of one item: ``scores`` (None when the item failed), every sample's
    parsed ratings, and how many samples the vote filter dropped."""

    scores: tuple[float, ...] | None
    samples: list[list[int]]
    dropped: int


def judge_prompt(rubric: str, question: str, answer: str, *, scale: tuple[int, int],
                 mode: str, options: "JudgeOptions | None" = None) -> Prompt:
    """The judge's request of one rubric (by default MT-Bench's single-answer grading layout;
    ``options.request``, ``options.how_generate`` and ``options.how_expected`` set another)."""
    low, high = scale
    request = REQUEST if options is None else options.request
    how = (HOW_GENERATE if options is None else options.how_generate) if mode == "generate" else (
        HOW_EXPECTED if options is None else options.how_expected)
    how = how.format(low=low, high=high, mid=(low + high) // 2)
    return Prompt(user=request.format(rubric=rubric.strip(), how=how, question=question.strip(),
                                      answer=answer.strip()))


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
        if o.mode != "expected" and o.temperature > 0 and key is None:
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
        if self.options.mode == "joint":
            raise ValueError("judge.mode = 'joint' rates every metric in one request; this task "
                             "rates one rubric per request: use mode 'generate' or 'expected'")
        return self._expected(items)

    def rate_joint(self, requests: Sequence[Prompt], num_ratings: int) -> list[JointRating]:
        """Joint judgements of prebuilt requests (one per item; see the module docstring), each
        sampled ``samples`` times, filtered by :func:`vote`."""
        o = self.options
        prompts, ids = [], []
        for request in requests:
            for sample in range(o.samples):
                prompts.append(request)
                ids.append(item_id(request.system or "", request.user, "joint", sample))
        if not prompts:
            return []
        from w2s_jax.inference import make_sampler

        texts = self.engine.generate(prompts, max_new_tokens=o.max_new_tokens,
                                     sampler=make_sampler(temperature=o.temperature), key=self.key,
                                     example_ids=ids)
        out = []
        for i in range(len(requests)):
            samples = [parse_ratings(t) for t in texts[i * o.samples:(i + 1) * o.samples]]
            scores = vote(samples, num_ratings, o.count_rule)
            kept = 0 if scores is None else sum(len(s) == num_ratings for s in samples)
            out.append(JointRating(scores=scores, samples=samples, dropped=len(samples) - kept))
        return out

    def _generated(self, items) -> list[Rating]:
        o = self.options
        prompts, ids = [], []
        for rubric, question, answer in items:
            prompt = judge_prompt(rubric, question, answer, scale=o.scale, mode="generate", options=o)
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
            prompt = judge_prompt(rubric, question, answer, scale=self.options.scale, mode="expected",
                                  options=self.options)
            prompts += [prompt] * len(values)
            replies += [f"Rating: [[{v}]]" for v in values]
        scores = self.engine.score(prompts, replies)
        logp_NxK = np.array([s.sum_logprob for s in scores], np.float64).reshape(len(items), len(values))
        probs_NxK = np.exp(logp_NxK - logp_NxK.max(axis=1, keepdims=True))
        probs_NxK /= probs_NxK.sum(axis=1, keepdims=True)
        return [Rating(score=float(probs_K @ values), samples=[], malformed=0, probs=tuple(probs_K.tolist()))
                for probs_K in probs_NxK]
