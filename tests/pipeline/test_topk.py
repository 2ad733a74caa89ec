"""Top-k next-token targets against a direct computation: one unpadded forward pass over the
concatenated tokens, a float64 softmax over the whole vocabulary, the k largest, renormalised."""

from __future__ import annotations

import numpy as np
import pytest

from tests.pipeline.tiny_lm import (
    direct_probs,
    direct_topk,
    tiny_engine,
    tiny_tokenizer,
)
from w2s_jax.inference import Prompt


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_engine(tiny_tokenizer(tmp_path_factory.mktemp("topk_tokenizer")), seed=1, batch_size=2)


PROMPTS = [Prompt(user="the cat sat on", system="a dog ran home"), "why is the",
           Prompt(user="a big red dog ran to the blue mat and then")]
COMPLETIONS = [" the mat", " weak teacher strong and small", " sat"]


@pytest.mark.parametrize("k", [1, 5])
def test_engine_top_k_equals_the_direct_softmax(engine, k):
    # 3 pairs of different lengths in batches of 2: length-sorted, right-padded, a filler row in
    # the second batch, and the results back in the caller's order
    results = engine.next_token_topk(PROMPTS, COMPLETIONS, k)
    assert len(results) == 3
    for prompt, completion, result in zip(PROMPTS, COMPLETIONS, results):
        completion_ids, ids, probs, kept = direct_topk(engine, prompt, completion, k)
        assert result.token_ids == completion_ids and len(completion_ids) == len(completion.split())
        assert result.topk_ids.shape == result.topk_probs.shape == (len(completion_ids), k)
        np.testing.assert_array_equal(result.topk_ids, ids)
        np.testing.assert_allclose(result.topk_probs, probs, atol=1e-5)
        np.testing.assert_allclose(result.topk_probs.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(result.kept_mass, kept, atol=1e-5)


def test_top_k_over_the_whole_vocabulary_is_the_softmax(engine):
    vocab = engine.model.config.vocab_size
    (result,) = engine.next_token_topk(["the cat"], [" sat on"], vocab)
    prompt_ids = engine.encode(["the cat"])[0]
    probs = direct_probs(engine.model, prompt_ids + result.token_ids)[len(prompt_ids) - 1 : -1]
    np.testing.assert_allclose(result.kept_mass, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(probs, result.topk_ids, axis=-1), result.topk_probs,
                               atol=1e-5)


def test_bad_requests_name_the_problem(engine):
    with pytest.raises(ValueError, match=r"top-k must be an int in \[1, 39\]"):
        engine.next_token_topk(["the"], [" cat"], 40)
    with pytest.raises(ValueError, match="completion 1 encodes to no tokens"):
        engine.next_token_topk(["the", "a"], [" cat", " "], 2)
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        engine.next_token_topk(["the", "a"], [" cat"], 2)
    assert engine.next_token_topk([], [], 3) == []


def test_engine_encodes_a_list_as_the_tokenizer_encodes_each_prompt(engine):
    """`Engine.encode` tokenizes the list in one batch call: the ids of one call per prompt."""
    prompts = ["the cat sat", "a", "the the the cat on"]
    expected = [list(engine.tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    assert engine.encode(prompts) == expected and len({len(x) for x in expected}) > 1
    assert engine.encode([]) == []
    with pytest.raises(ValueError, match="tiny: prompt 1 encodes to no tokens: ''"):
        engine.encode(["the", ""])
