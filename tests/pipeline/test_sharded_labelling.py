"""Labelling on a mesh of 8 fake CPU devices gives the same labels as on one device.

The sharded engine splits each generation batch's rows over the mesh's ("data", "fsdp") axes and
its parameters over the rules' axes; the computation per row is the same, so greedy labels are
identical (a sharded float32 matmul sums in another order, well inside the logit gaps of these
few tokens). A spy on the prefill checks that the rows really were split, since equal labels alone
would also pass if the mesh were ignored.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from tests.pipeline.tiny_lm import tiny_tokenizer
from w2s_jax.inference import Engine, Prompt, Temperature, generation
from w2s_jax.methods import MethodContext
from w2s_jax.methods.icl_refine import ICLRefine, ICLRefineOptions
from w2s_jax.models import ModelConfig, Transformer
from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh
from w2s_jax.tasks import Example, Generation, Task

QUESTIONS = ["the cat sat on the mat", "why is the dog big", "what ran home", "a red cat and a blue dog",
             "how was the mat", "she ran to the big home then sat", "is it true", "the weak teacher"]
WEAK = ["yes", "no", "the dog", "true", "big", "it was red", "false", "the student"]


class Questions(Task):
    """The question is the whole student prompt."""

    name = "sharded-questions"

    def example(self, row, index, source):
        return Example(index=index, question=row, answer=None)

    def prompt(self, example):
        return Prompt(user=example.question)

    def metric(self, examples, predictions, *, judge=None):
        return [{"score": None} for _ in examples]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("sharded_tokenizer"))


def _model(tokenizer):
    return Transformer(ModelConfig.tiny("llama", vocab_size=len(tokenizer)), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8, "tests/conftest.py asks for 8 fake CPU devices"
    return make_mesh(MeshConfig(data=2, fsdp=2, tp=2))  # rows split 4 ways, heads/mlp/vocab 2 ways


def _labels(engine, max_new_tokens=6):
    task = Questions()
    ctx = MethodContext(task=task, examples=[task.example(q, i, "test") for i, q in enumerate(QUESTIONS)],
                        weak=WEAK, upstream={}, engine=lambda role: engine,
                        generation=Generation(max_new_tokens=max_new_tokens))
    method = ICLRefine(ICLRefineOptions(batch=3))
    return method.label(ctx, method.units(ctx))


def test_sharded_icl_refine_labels_equal_one_device(tokenizer, mesh, monkeypatch):
    single = Engine(_model(tokenizer), tokenizer, batch_size=4, length_bucket=16)
    sharded = Engine(_model(tokenizer), tokenizer, batch_size=4, length_bucket=16, mesh=mesh,
                     rules=ShardingRules.fsdp_tp())
    assert len(sharded.model.layers[0].attn.q_proj[...].sharding.device_set) == 8
    placements = []
    prefill = generation._prefill

    def spy(graphdef, state, tokens_BxS, *args, **kwargs):
        decode_state = prefill(graphdef, state, tokens_BxS, *args, **kwargs)
        placements.append((tokens_BxS.sharding, jax.tree.leaves(decode_state.cache.keys)[0].sharding))
        return decode_state

    expected = _labels(single)
    monkeypatch.setattr(generation, "_prefill", spy)
    got = _labels(sharded)
    assert got == expected
    assert len(placements) == 2  # 8 queries in batches of 4
    for tokens_sharding, keys_sharding in placements:
        assert tokens_sharding.spec[0] == ("data", "fsdp") and len(tokens_sharding.device_set) == 8
        assert ("data", "fsdp") in tuple(keys_sharding.spec)  # the rows axis of the cache
    assert any(row["completion"].strip() for row in got), got  # labels with words in them


def test_sharded_sampling_draws_the_same_tokens(tokenizer, mesh):
    """Sampling keys follow each prompt's identity, not the device its row lands on; a last batch
    of 2 prompts is filled up to the 4 rows the mesh splits."""
    prompts = [Prompt(user=q) for q in QUESTIONS[:6]]
    kwargs = {"max_new_tokens": 5, "sampler": Temperature(1.0), "key": jax.random.key(3)}
    single = Engine(_model(tokenizer), tokenizer, batch_size=4, length_bucket=16)
    sharded = Engine(_model(tokenizer), tokenizer, batch_size=4, length_bucket=16, mesh=mesh,
                     rules=ShardingRules.fsdp())
    assert sharded.generate(prompts, **kwargs) == single.generate(prompts, **kwargs)


def test_batch_size_must_split_over_the_mesh_rows(tokenizer, mesh):
    with pytest.raises(ValueError, match=r"batch_size=6 is not a multiple of .* data \* fsdp = 4.*use 8 or 4"):
        Engine(_model(tokenizer), tokenizer, batch_size=6, mesh=mesh, rules=ShardingRules.fsdp())


def test_unplaced_model_on_a_mesh_names_the_fix(tokenizer, mesh):
    with pytest.raises(ValueError, match=r"not on the mesh's 8.*load_pretrained\(\.\.\., mesh=mesh"):
        Engine(_model(tokenizer), tokenizer, batch_size=4, mesh=mesh)


def test_sharded_scoring_and_topk_equal_one_device(tokenizer, mesh, monkeypatch):
    """The judge's and distillation's primitives split their rows over the mesh too: scores and
    top-k distributions equal one device's, for a full batch and a lone pair (1 row, filled up to
    the 4 the mesh splits), and a spy sees each batch's tokens split over ("data", "fsdp")."""
    from w2s_jax.inference import scoring, topk

    single = Engine(_model(tokenizer), tokenizer, batch_size=4, length_bucket=16)
    sharded = Engine(_model(tokenizer), tokenizer, batch_size=4, length_bucket=16, mesh=mesh,
                     rules=ShardingRules.fsdp_tp())
    seen = []

    def spying(real):
        def spy(graphdef, state, tokens_BxT, *args, **kwargs):
            seen.append((tokens_BxT.shape[0], tokens_BxT.sharding))
            return real(graphdef, state, tokens_BxT, *args, **kwargs)
        return spy

    prompts, completions = [Prompt(user=q) for q in QUESTIONS[:5]], WEAK[:5]
    expected_scores = single.score(prompts, completions)
    expected_topk = single.next_token_topk(prompts, completions, 3)
    monkeypatch.setattr(scoring, "_completion_logprobs", spying(scoring._completion_logprobs))
    monkeypatch.setattr(topk, "_next_token_topk", spying(topk._next_token_topk))
    for got, want in zip(sharded.score(prompts, completions), expected_scores, strict=True):
        assert got.token_ids == want.token_ids
        np.testing.assert_allclose(got.token_logprobs, want.token_logprobs, atol=1e-5)
    for got, want in zip(sharded.next_token_topk(prompts, completions, 3), expected_topk, strict=True):
        np.testing.assert_array_equal(got.topk_ids, want.topk_ids)
        np.testing.assert_allclose(got.topk_probs, want.topk_probs, atol=1e-5)
    assert [rows for rows, _ in seen] == [4, 4, 4, 4]  # 5 pairs: a batch of 4, then 1 pair filled to 4
    for _, sharding in seen:
        assert sharding.spec[0] == ("data", "fsdp") and len(sharding.device_set) == 8
