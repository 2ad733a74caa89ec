"""The judge: rating parsing, malformed counts, per-item keys, and the expected-score mode.

The "generate" mode tests drive the judge with a fake engine whose ``generate`` returns canned
judgements and records its arguments. That is a legitimate unit test of the parser and the
bookkeeping (which sample counts, what is malformed, which key each judgement gets): a real
model's text would not let the test choose the tricky cases. The "expected" mode is checked on a
tiny random model against a direct computation from the model's logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from w2s_jax.inference import Engine, Prompt, Temperature
from w2s_jax.models import ModelConfig, Transformer
from w2s_jax.tasks import get_task
from w2s_jax.tasks.judge import Judge, JudgeOptions, Rating, judge_prompt, parse_rating


class FakeEngine:
    """Replies to prompt i with ``replies[i]`` and records every generate call."""

    def __init__(self, replies):
        self.replies, self.calls = list(replies), []

    def generate(self, prompts, **kwargs):
        self.calls.append(dict(prompts=list(prompts), **kwargs))
        assert len(prompts) <= len(self.replies)
        return self.replies[:len(prompts)]


@pytest.mark.parametrize("text, expected", [
    ("Good answer. Rating: [[7]]", 7.0),
    ("Rating: [[7.5]]", 7.5),
    ("[[ 4 ]]", 4.0),
    ("[[10]]", 10.0),
    ("[[1]]", 1.0),
    ("I was asked for [[rating]]; here it is: [[8]]", 8.0),  # non-numbers skipped
    ("[[3]] and later [[9]]", 3.0),  # the first rating counts
    ("[[11]]", None),  # out of scale: malformed, even if a valid one follows
    ("[[0]] then [[5]]", None),
    ("[[-1]]", None),
    ("[[7/10]]", None),
    ("Rating: [7]", None),
    ("Rating: 7", None),
    ("", None),
])
def test_parse_rating(text, expected):
    assert parse_rating(text, (1, 10)) == expected


def test_parse_rating_other_scale():
    assert parse_rating("[[0]]", (0, 4)) == 0.0 and parse_rating("[[5]]", (0, 4)) is None


def test_generate_mode_scores_and_malformed_counts():
    replies = ["ok [[7]]", "garbage", "fine [[9]]",  # item 0: two valid, one malformed
               "[[12]]", "none", "[[rating]]",  # item 1: every sample malformed
               "[[2]]", "[[3]]", "[[4]]"]  # item 2
    engine = FakeEngine(replies)
    judge = Judge(engine, JudgeOptions(samples=3), key=jax.random.key(3))
    ratings = judge.rate_many([("Rate it.", "q0", "a0"), ("Rate it.", "q1", "a1"), ("Rate it.", "q2", "a2")])
    assert ratings[0] == Rating(score=8.0, samples=[7.0, 9.0], malformed=1)
    assert ratings[1] == Rating(score=None, samples=[], malformed=3)
    assert ratings[2] == Rating(score=3.0, samples=[2.0, 3.0, 4.0], malformed=0)
    (call,) = engine.calls
    assert len(call["prompts"]) == 9 and call["prompts"][0] == call["prompts"][2]  # samples of item 0
    assert "q1" in call["prompts"][3].user and "a1" in call["prompts"][3].user
    assert call["sampler"] == Temperature(0.7) and call["max_new_tokens"] == 256
    assert call["key"] is judge.key


def test_generate_mode_keys_depend_on_the_item_only():
    items = [("Rate it.", "q0", "a0"), ("Rate it.", "q1", "a1")]
    both = FakeEngine(["[[5]]"] * 6)
    Judge(both, JudgeOptions(samples=3), key=jax.random.key(0)).rate_many(items)
    alone = FakeEngine(["[[5]]"] * 3)
    Judge(alone, JudgeOptions(samples=3), key=jax.random.key(0)).rate_many(items[1:])
    ids = both.calls[0]["example_ids"]
    assert ids[3:] == alone.calls[0]["example_ids"]  # item 1 draws the same keys in any company
    assert len(set(ids)) == 6  # distinct per item and per sample
    assert all(0 <= i < 2**31 for i in ids)


def test_single_greedy_judgement():
    engine = FakeEngine(["[[6]]"])
    (rating,) = Judge(engine, JudgeOptions(samples=1)).rate_many([("r", "q", "a")])
    assert rating.score == 6.0 and engine.calls[0]["sampler"].__class__.__name__ == "Greedy"


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="vote"), "judge.mode"),
    (dict(samples=0), "judge.samples"),
    (dict(samples=3, temperature=0.0), "repeats one greedy judgement"),
    (dict(scale=(5, 5)), "judge.scale"),
    (dict(scale=(1, 2, 3)), "judge.scale"),
    (dict(scale=(1.5, 10)), "judge.scale"),
    (dict(temperature=-1.0), "judge.temperature"),
    (dict(max_new_tokens=0), "judge.max_new_tokens"),
])
def test_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JudgeOptions(**kwargs)


def test_option_defaults():
    assert JudgeOptions().temperature == 0.7
    assert JudgeOptions(samples=1).temperature == 0.0
    assert JudgeOptions(scale=[0, 9]).scale == (0, 9)  # TOML lists become tuples
    with pytest.raises(ValueError, match="needs a PRNG key"):
        Judge(FakeEngine([]), JudgeOptions())


def test_items_are_checked():
    judge = Judge(FakeEngine([]), JudgeOptions(samples=1))
    assert judge.rate_many([]) == []
    with pytest.raises(TypeError, match="judge item 0"):
        judge.rate_many([("rubric", "question")])


class FakeJudge:
    """Rates by rubric: style 9 (one malformed sample), quality all malformed, others 4."""

    def __init__(self):
        self.items = []

    def rate_many(self, items):
        self.items += items
        out = []
        for rubric, _, _ in items:
            if "persona" in rubric:
                out.append(Rating(score=9.0, samples=[9.0, 9.0], malformed=1))
            elif "content" in rubric:
                out.append(Rating(score=None, samples=[], malformed=3))
            else:
                out.append(Rating(score=4.0, samples=[4.0], malformed=0))
        return out


def test_judged_task_metric_assembles_rubrics():
    task = get_task("persona")()
    examples = [task.example({"instruction": f"Tell me about {x}."}, i, "p.jsonl") for i, x in enumerate("ab")]
    judge = FakeJudge()
    rows = task.metric(examples, ["Arr, a.", "Arr, b."], judge=judge)
    assert rows == [{"style": 9.0, "quality": None, "_malformed": 4}] * 2
    assert task.metric_names() == ("style", "quality", "_malformed")
    assert [item[1:] for item in judge.items] == [("Tell me about a.", "Arr, a.")] * 2 + [
        ("Tell me about b.", "Arr, b.")] * 2
    assert task.options.persona in judge.items[0][0]  # the style rubric names the persona
    with pytest.raises(ValueError, match="judge model"):
        task.metric(examples, ["x", "y"])


# --- "expected" mode on a tiny random model ----------------------------------------------------

VOCAB = ("<pad> <s> </s> <unk> Rating : [[ ]] 1 2 3 4 5 6 7 8 9 10 the cat sat on mat dog ran "
         "question answer rate how good is it").split()


@pytest.fixture(scope="module")
def engine():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    model = Transformer(ModelConfig.tiny("llama", vocab_size=len(VOCAB)), rngs=nnx.Rngs(0))
    # Larger output weights than the N(0, 0.02) init, so the rating distribution is far from uniform
    # and a wrong normalisation or value order would show.
    model.lm_head[...] = 2.0 * jax.random.normal(jax.random.key(1), model.lm_head[...].shape)
    return Engine(model, tokenizer, batch_size=4, length_bucket=16)


def _direct_expected(engine, prompt):
    """E[rating] from the model's logits: p(v | prompt, "Rating: [[") at the last position times
    p("]]" | ..., v), normalised over v = 1..10. One forward pass over the rows ``prefix`` and
    ``prefix + [v]`` (right-padded; causal attention keeps padding out of the positions read)."""
    tok, model = engine.tokenizer, engine.model
    prefix = tok(engine.render(prompt))["input_ids"] + tok.encode("Rating: [[", add_special_tokens=False)
    digits = [tok.convert_tokens_to_ids(str(v)) for v in range(1, 11)]
    rows = [prefix] + [prefix + [d] for d in digits]
    length = len(prefix) + 1
    tokens = jnp.asarray([r + [0] * (length - len(r)) for r in rows])
    valid = jnp.asarray([[True] * len(r) + [False] * (length - len(r)) for r in rows])
    graphdef, state = nnx.split(model)
    logits = jax.jit(lambda s, t, v: nnx.merge(graphdef, s)(t, positions_BxT=jnp.broadcast_to(
        jnp.arange(length), t.shape), valid_BxT=v)[0])(state, tokens, valid)
    logprobs = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
    close = tok.convert_tokens_to_ids("]]")
    logp = np.array([logprobs[0, len(prefix) - 1, d] + logprobs[1 + i, len(prefix), close]
                     for i, d in enumerate(digits)])
    p = np.exp(logp - logp.max())
    p /= p.sum()
    return float(p @ np.arange(1, 11)), p


def test_expected_mode_matches_direct_computation(engine):
    tok = engine.tokenizer
    assert tok.tokenize("Rating: [[10]]") == ["Rating", ":", "[[", "10", "]]"]  # what the direct computation assumes
    items = [("rate how good it is", "the cat sat on the mat", "the dog ran"),
             ("rate how good it is", "question", "it is the answer"),
             ("rate it", "the cat", "")]
    ratings = Judge(engine, JudgeOptions(mode="expected")).rate_many(items)
    for (rubric, question, answer), rating in zip(items, ratings):
        prompt = judge_prompt(rubric, question, answer, scale=(1, 10), mode="expected")
        expected, p = _direct_expected(engine, prompt)
        assert p.max() - p.min() > 0.05  # not uniform: the comparison can fail
        np.testing.assert_allclose(rating.probs, p, atol=1e-5)
        assert rating.score == pytest.approx(expected, abs=1e-4)
        assert rating.samples == [] and rating.malformed == 0
    assert len({round(r.score, 6) for r in ratings}) == 3  # the items are rated, not a constant


def test_expected_mode_on_the_rating_scale(engine):
    (rating,) = Judge(engine, JudgeOptions(mode="expected", scale=(3, 5))).rate_many([("r", "q", "a")])
    assert len(rating.probs) == 3 and 3 <= rating.score <= 5
    assert rating.score == pytest.approx(float(np.dot(rating.probs, [3, 4, 5])))


def test_engine_sampling_keys_follow_example_ids(engine):
    """What the judge's per-item keys rest on: a prompt's sample depends on its id, not its company."""
    sampler, key = Temperature(1.0), jax.random.key(0)
    prompts = ["the cat sat on the mat", "how good is it"]
    together = engine.generate(prompts, max_new_tokens=8, sampler=sampler, key=key, example_ids=[11, 22])
    alone = engine.generate(prompts[1:], max_new_tokens=8, sampler=sampler, key=key, example_ids=[22])
    assert together[1] == alone[0]
    others = {engine.generate(prompts[1:], max_new_tokens=8, sampler=sampler, key=key, example_ids=[i])[0]
              for i in range(5)}
    assert len(others) > 1  # the id does change the draw
    with pytest.raises(ValueError, match="1 example_ids for 2 prompts"):
        engine.generate(prompts, max_new_tokens=2, sampler=sampler, key=key, example_ids=[1])


def test_the_rubric_request_is_configuration():
    options = JudgeOptions(mode="expected", request="{rubric} | {question} | {answer} | {how}",
                           how_expected="from {low} to {high}, say [[{mid}]]", scale=(0, 4))
    prompt = judge_prompt(" Be fair. ", " q? ", " a. ", scale=(0, 4), mode="expected", options=options)
    assert prompt == Prompt(user="Be fair. | q? | a. | from 0 to 4, say [[2]]")
    with pytest.raises(ValueError, match=r"judge.request must be a string with placeholders among"):
        JudgeOptions(request="{rubric} {response}")
