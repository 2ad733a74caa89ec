"""Completion scoring against `transformers`: log-softmax of the PyTorch logits gathered on the
completion tokens, each sequence run alone and unpadded."""

import jax.numpy as jnp
import numpy as np
import pytest

from tests.lm.hf_fixtures import load_hf_torch_model, make_hf_checkpoint
from w2s_jax.inference import completion_logprobs, score, token_logprobs
from w2s_jax.models import load_pretrained, load_tokenizer

torch = pytest.importorskip("torch", reason="the transformers reference needs torch")

PROMPTS = ["the cat sat on", "why", "a big red dog ran to the blue"]
COMPLETIONS = [" the mat", " is the weak teacher strong", " home and then sat"]


@pytest.fixture(scope="module", params=["llama", "gemma2"])
def checkpoint(request, tmp_path_factory):
    path = make_hf_checkpoint(tmp_path_factory.mktemp(f"score_{request.param}"), request.param)
    model, _ = load_pretrained(path)
    return model, load_tokenizer(path), load_hf_torch_model(path), path


def _torch_logprobs(reference, full_ids, num_prompt):
    with torch.no_grad():
        logits = reference(torch.tensor([full_ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(full_ids[num_prompt:])
    return logprobs[num_prompt - 1 : len(full_ids) - 1].gather(1, targets[:, None])[:, 0].numpy()


def test_score_matches_torch(checkpoint):
    model, tokenizer, reference, _ = checkpoint
    results = score(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=2)  # 2 batches, padded
    assert len(results) == 3
    for prompt, completion, result in zip(PROMPTS, COMPLETIONS, results):
        prompt_ids = tokenizer(prompt)["input_ids"]
        full_ids = tokenizer(prompt + completion)["input_ids"]
        assert full_ids[: len(prompt_ids)] == prompt_ids
        assert result.token_ids == full_ids[len(prompt_ids):]
        assert len(result.token_ids) == len(completion.split())
        expected = _torch_logprobs(reference, full_ids, len(prompt_ids))
        np.testing.assert_allclose(result.token_logprobs, expected, atol=1e-4, rtol=0)
        assert abs(result.sum_logprob - expected.sum()) <= 1e-4 * len(expected)


def test_score_with_per_layer_weights_matches_torch(checkpoint):
    """Weights loaded one array per layer (the inference layout) score as the reference does,
    alone and on an FSDP x TP mesh of 8 fake CPU devices."""
    from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh

    _, tokenizer, reference, path = checkpoint
    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tp=2))
    for model in (load_pretrained(path, layout="per_layer")[0],
                  load_pretrained(path, layout="per_layer", mesh=mesh, rules=ShardingRules.fsdp_tp())[0]):
        assert isinstance(model.layers.mlp.up_proj.get_value(), tuple)
        for prompt, completion, result in zip(PROMPTS, COMPLETIONS, score(model, tokenizer, PROMPTS, COMPLETIONS,
                                                                          batch_size=4)):
            prompt_ids = tokenizer(prompt)["input_ids"]
            expected = _torch_logprobs(reference, tokenizer(prompt + completion)["input_ids"], len(prompt_ids))
            np.testing.assert_allclose(result.token_logprobs, expected, atol=1e-4, rtol=0)


def test_score_with_the_gpu_program_matches_torch(checkpoint):
    """The GPU's program (whole sequences, fused attention, no barriers), run here on the CPU,
    scores as the reference does: padded batches and sequences long enough for the CPU's chunks."""
    from w2s_jax.models.backend import set_backend

    _, tokenizer, reference, path = checkpoint
    model, _ = load_pretrained(path, layout="stacked")
    set_backend(model, "gpu")
    for prompt, completion, result in zip(PROMPTS, COMPLETIONS, score(model, tokenizer, PROMPTS, COMPLETIONS,
                                                                      batch_size=2)):
        prompt_ids = tokenizer(prompt)["input_ids"]
        expected = _torch_logprobs(reference, tokenizer(prompt + completion)["input_ids"], len(prompt_ids))
        np.testing.assert_allclose(result.token_logprobs, expected, atol=1e-4, rtol=0)


def test_score_token_ids_equal_strings(checkpoint):
    model, tokenizer, _, _ = checkpoint
    by_text = score(model, tokenizer, PROMPTS[:2], COMPLETIONS[:2])
    ids = [(tokenizer(p)["input_ids"], tokenizer(p + c)["input_ids"]) for p, c in zip(PROMPTS, COMPLETIONS)]
    by_ids = score(model, None, [p for p, _ in ids[:2]], [f[len(p):] for p, f in ids[:2]], batch_size=1)
    for a, b in zip(by_text, by_ids):
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-5)


@pytest.mark.parametrize("dtype, atol", [("float32", 2e-5), ("bfloat16", 0.1)])
def test_score_batches_only_its_rows_and_ignores_batch_size(checkpoint, monkeypatch, dtype, atol):
    """One pair runs as one row, three as four; log-probabilities agree across batch sizes up to
    the dtype's rounding (bf16 keeps 8 bits of mantissa: a few hundredths on values of ~-5)."""
    from w2s_jax.inference import scoring

    _, tokenizer, _, path = checkpoint
    model, _ = load_pretrained(path, dtype=getattr(jnp, dtype))
    rows_seen = []
    forward = scoring.completion_logprobs
    monkeypatch.setattr(scoring, "completion_logprobs",
                        lambda m, tokens_BxT, *rest, **kw: rows_seen.append(len(tokens_BxT))
                        or forward(m, tokens_BxT, *rest, **kw))
    alone = score(model, tokenizer, PROMPTS[:1], COMPLETIONS[:1], batch_size=8)
    assert rows_seen == [1]
    by_batch = {size: score(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=size) for size in (1, 2, 8)}
    # batch 1: three one-row batches; batch 2: a two-row and a one-row batch (in streams, the
    # dearer one may run first); batch 8: one batch of four rows
    assert rows_seen[1:4] == [1, 1, 1] and sorted(rows_seen[4:6]) == [1, 2] and rows_seen[6:] == [4]
    np.testing.assert_allclose(alone[0].token_logprobs, by_batch[1][0].token_logprobs, atol=atol, rtol=0)
    for size in (2, 8):
        for a, b in zip(by_batch[size], by_batch[1]):
            assert a.token_ids == b.token_ids
            np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=atol, rtol=0)


def test_completion_logprobs_masks_and_is_padding_invariant(checkpoint):
    model, _, reference, _ = checkpoint
    seq = [1, 5, 9, 4, 12, 7]
    tokens_BxT = jnp.asarray([seq + [0, 0], [0, 0] + seq])  # right- and left-padded copies
    valid_BxT = tokens_BxT != 0
    mask_BxT = jnp.zeros(tokens_BxT.shape, bool).at[0, 3:6].set(True).at[1, 5:8].set(True)
    logprobs_BxT = np.asarray(completion_logprobs(model, tokens_BxT, valid_BxT, mask_BxT))
    assert logprobs_BxT.shape == (2, 8)
    assert np.all(logprobs_BxT[~np.asarray(mask_BxT)] == 0)
    expected = _torch_logprobs(reference, seq, 3)
    np.testing.assert_allclose(logprobs_BxT[0, 3:6], expected, atol=1e-4)
    np.testing.assert_allclose(logprobs_BxT[1, 5:8], expected, atol=1e-4)


def test_token_logprobs_on_known_logits():
    logits_BxTxV = jnp.log(jnp.asarray([[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [1 / 3] * 3]]))
    tokens_BxT = jnp.asarray([[0, 1, 2]])
    out = np.asarray(token_logprobs(logits_BxTxV, tokens_BxT, jnp.asarray([[True, True, True]])))
    np.testing.assert_allclose(out, [[0.0, np.log(0.25), np.log(0.7)]], rtol=1e-6)


def test_score_rejects_mismatched_lengths(checkpoint):
    model, tokenizer, _, _ = checkpoint
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        score(model, tokenizer, PROMPTS[:2], COMPLETIONS[:1])


def test_score_with_model_loaded_sharded(checkpoint):
    """Loaded straight onto an FSDP x TP mesh of 8 fake CPU devices, scores are unchanged."""
    from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh

    model, tokenizer, _, path = checkpoint
    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tp=2))
    sharded, _ = load_pretrained(path, mesh=mesh, rules=ShardingRules.fsdp_tp())
    assert len(sharded.embedding[...].sharding.device_set) == 8
    expected = score(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=4)
    for a, b in zip(score(sharded, tokenizer, PROMPTS, COMPLETIONS, batch_size=4), expected):
        assert a.token_ids == b.token_ids
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-5)


@pytest.mark.parametrize("length_bucket", [16, 64])
def test_long_sequences_score_in_chunks_as_torch_does(checkpoint, length_bucket, monkeypatch):
    """Sequences of 109-168 tokens run through the cache in chunks (`prefill.run_chunks`; with
    chunk steps of 32 rows, 4 rows make chunks of 16 slots: 10 of them at the padded length 160,
    12 at 192, where the cache is also read in 64-slot blocks), right-padded in one batch, and
    still score as the reference does position by position."""
    from w2s_jax.inference import prefill

    monkeypatch.setattr(prefill, "ROWS_PER_CHUNK", 32)
    assert prefill.scoring_chunk(4, 160) == prefill.scoring_chunk(4, 192) == 16
    model, _, reference, _ = checkpoint
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    prompts = [rng.integers(2, vocab, n).tolist() for n in (100, 141, 150)]
    completions = [rng.integers(2, vocab, n).tolist() for n in (20, 9, 18)]
    results = score(model, None, prompts, completions, batch_size=4, length_bucket=length_bucket)
    for prompt, completion, result in zip(prompts, completions, results):
        expected = _torch_logprobs(reference, prompt + completion, len(prompt))
        np.testing.assert_allclose(result.token_logprobs, expected, atol=2e-4, rtol=0)


def test_scoring_never_forms_a_sequence_by_sequence_score_array(checkpoint):
    """The compiled scoring program of 16 rows of 256 tokens holds no `... x 256 x 256` array (its
    attention reads the cache a 64-slot chunk of queries at a time)."""
    from flax import nnx

    from w2s_jax.inference import scoring

    model, _, _, _ = checkpoint
    tokens_BxT = np.ones((16, 256), np.int32)
    rows_N, cols_N = scoring.gather_positions(np.ones((16, 256), bool))
    hlo = scoring._completion_logprobs.lower(*nnx.split(model), tokens_BxT, tokens_BxT > 0, rows_N,
                                             cols_N).compile().as_text()
    assert "256,256]" not in hlo.replace(" ", "")
    assert ",64,256]" in hlo.replace(" ", "") or "64,256]" in hlo.replace(" ", "")  # a chunk's scores


def test_scoring_chunk_reads_the_weights_once_for_short_rows():
    from w2s_jax.inference.prefill import scoring_chunk

    assert scoring_chunk(16, 384) == 64  # 1,024 rows a step
    assert scoring_chunk(8, 384) == 128
    assert scoring_chunk(1, 2048) == 1024
    assert scoring_chunk(1, 80) == 80  # one short row: a single pass over the weights
    assert scoring_chunk(2, 800) == 800  # no power-of-two divisor gives enough rows
    assert scoring_chunk(64, 384) == 16
