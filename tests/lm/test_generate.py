"""Sampling strategies and KV-cache generation, checked against hand-made distributions, a
no-cache forward pass of our own model, and `transformers` `generate(do_sample=False)`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.lm.hf_fixtures import FAMILIES, load_hf_torch_model, make_hf_checkpoint
from w2s_jax.inference import (
    Greedy,
    Temperature,
    TopK,
    TopP,
    generate,
    make_sampler,
    top_k_filter,
    top_p_filter,
)
from w2s_jax.inference import compile_ahead, generation
from w2s_jax.inference.batching import geometric_bucket, pad_sequences, positions_from_valid, prompt_layout, round_up
from w2s_jax.inference.sampling import example_keys
from w2s_jax.models import ModelConfig, Transformer, load_pretrained, load_tokenizer, to_layout
from w2s_jax.models.backend import set_backend

# --- sampling filters on hand-made distributions -------------------------------------------------

PROBS_V = np.array([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5 (1), 0.3 (3), 0.15 (2), 0.05 (0)


def _kept(logits_BxV) -> list[set[int]]:
    return [set(np.flatnonzero(np.isfinite(row)).tolist()) for row in np.asarray(logits_BxV)]


@pytest.mark.parametrize("p, nucleus", [(0.4, {1}), (0.7, {1, 3}), (0.85, {1, 2, 3}),
                                        (0.97, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})])
def test_top_p_keeps_minimal_nucleus(p, nucleus):
    logits_BxV = jnp.log(jnp.asarray([PROBS_V, PROBS_V[::-1]]))
    reversed_nucleus = {3 - i for i in nucleus}
    assert _kept(top_p_filter(logits_BxV, p)) == [nucleus, reversed_nucleus]


def test_top_k_keeps_k_largest():
    logits_BxV = jnp.log(jnp.asarray([PROBS_V]))
    assert _kept(top_k_filter(logits_BxV, 1)) == [{1}]
    assert _kept(top_k_filter(logits_BxV, 2)) == [{1, 3}]
    assert _kept(top_k_filter(logits_BxV, 10)) == [{0, 1, 2, 3}]
    kept = np.asarray(top_k_filter(logits_BxV, 2))[0]
    np.testing.assert_array_equal(kept[[1, 3]], np.log(PROBS_V)[[1, 3]].astype(np.float32))


def test_temperature_with_top_p_samples_renormalised_nucleus():
    """Empirical frequencies match the renormalised nucleus within 5 Monte Carlo standard errors."""
    n = 4000
    logits_NxV = jnp.log(jnp.tile(jnp.asarray(PROBS_V, jnp.float32), (n, 1)))
    sampler = Temperature(1.0, filters=(TopP(0.85),))
    tokens_N = sampler(logits_NxV, keys_B=example_keys(jax.random.key(0), jnp.arange(n), 0))
    freq_V = np.bincount(np.asarray(tokens_N), minlength=4) / n
    expected_V = np.where([False, True, True, True], PROBS_V, 0.0) / 0.95
    tolerance_V = 5 * np.sqrt(expected_V * (1 - expected_V) / n) + 1e-12
    assert np.all(np.abs(freq_V - expected_V) <= tolerance_V), (freq_V, expected_V)


def test_top_k_one_equals_greedy():
    logits_BxV = jax.random.normal(jax.random.key(0), (16, 50))
    keys_B = example_keys(jax.random.key(1), jnp.arange(16), 0)
    greedy_B = Greedy()(logits_BxV, keys_B=keys_B)
    top1_B = Temperature(2.0, filters=(TopK(1),))(logits_BxV, keys_B=keys_B)
    np.testing.assert_array_equal(greedy_B, top1_B)
    np.testing.assert_array_equal(greedy_B, np.argmax(np.asarray(logits_BxV), -1))


def test_greedy_is_the_first_maximum_like_numpy_argmax():
    """`first_argmax` (two plain reductions) picks what `np.argmax` picks: the first of tied
    maxima, the first NaN, index 0 of an all -inf row, an inf."""
    logits_BxV = np.random.default_rng(0).normal(size=(6, 33)).astype(np.float32)
    logits_BxV[1, [4, 20]] = 9.0  # tie: the first
    logits_BxV[2, [7, 3]] = np.nan  # NaN: the first one
    logits_BxV[3] = -np.inf
    logits_BxV[4, [30, 2]] = np.inf
    logits_BxV[5, 32] = 50.0  # the last column
    greedy_B = Greedy()(jnp.asarray(logits_BxV), keys_B=None)
    assert greedy_B.dtype == jnp.int32
    np.testing.assert_array_equal(greedy_B, np.argmax(logits_BxV, -1))
    np.testing.assert_array_equal(greedy_B[1:], [4, 3, 0, 2, 32])


def test_sampler_validation_names_bad_value():
    with pytest.raises(ValueError, match="-0.5"):
        Temperature(-0.5)
    with pytest.raises(ValueError, match="1.5"):
        TopP(1.5)
    with pytest.raises(ValueError, match="0"):
        TopK(0)
    assert make_sampler(temperature=0.0, top_k=5) == Greedy()
    assert make_sampler(temperature=0.5, top_k=5, top_p=1.0) == Temperature(0.5, filters=(TopK(5),))


def test_left_padding_and_positions():
    tokens_BxT, valid_BxT = pad_sequences([[5, 6, 7], [8]], length=4, pad_id=0, side="left")
    np.testing.assert_array_equal(tokens_BxT, [[0, 5, 6, 7], [0, 0, 0, 8]])
    np.testing.assert_array_equal(positions_from_valid(valid_BxT), [[0, 0, 1, 2], [0, 0, 0, 0]])
    tokens_BxT, valid_BxT = pad_sequences([[5, 6, 7], [8]], length=4, pad_id=0, side="right")
    np.testing.assert_array_equal(valid_BxT, [[1, 1, 1, 0], [1, 0, 0, 0]])
    assert (round_up(1, 16), round_up(16, 16), round_up(17, 16)) == (16, 16, 32)


def test_cache_lengths_lie_on_four_steps_per_doubling():
    assert [geometric_bucket(n, per_octave=4) for n in (1, 2, 5, 257, 319, 321, 447, 449, 1000)] == \
        [1, 2, 5, 320, 320, 384, 448, 512, 1024]
    assert [geometric_bucket(n) for n in (257, 447)] == [384, 512]  # two per doubling
    # the benchmark's four batches: prompts prefilled in chunks of 64, then 63 fed-back new tokens
    assert [prompt_layout(n, 64, 64) for n in (253, 290, 315, 352)] == [(4, 320), (5, 384), (5, 384), (6, 448)]
    assert prompt_layout(3, 1, 16) == (1, 64)  # the smallest cache
    with pytest.raises(ValueError, match="power of two"):
        geometric_bucket(10, per_octave=3)


# --- generation with our own model ---------------------------------------------------------------

PROMPTS = [[1, 5, 6, 7, 8, 9], [1, 10, 11]]


@pytest.fixture(scope="module")
def tiny_model():
    return Transformer(ModelConfig.tiny("llama", eos_token_ids=()), rngs=nnx.Rngs(0))


def test_greedy_cache_matches_no_cache_forward(tiny_model):
    """Each greedy token is the argmax of a full no-cache forward pass over prompt + generation."""
    result = generate(tiny_model, None, PROMPTS, max_new_tokens=7)
    for prompt, generated in zip(PROMPTS, result.token_ids):
        assert len(generated) == 7
        seq = jnp.asarray([prompt + generated])
        logits, _ = tiny_model(seq, positions_BxT=jnp.arange(seq.shape[1])[None],
                               valid_BxT=jnp.ones(seq.shape, bool))
        argmax = np.asarray(logits[0, len(prompt) - 1 : -1].argmax(-1)).tolist()
        assert argmax == generated
    assert result.finish_reasons == ["length", "length"]


def test_batches_with_filler_rows_match_one_batch(tiny_model):
    prompts = PROMPTS + [[1, 4, 4]]
    whole = generate(tiny_model, None, prompts, max_new_tokens=4)
    assert generate(tiny_model, None, prompts, max_new_tokens=4, batch_size=2) == whole


def test_chunked_prefill_matches_no_cache_forward_and_shares_one_program(tiny_model):
    """Prompts longer than one prefill chunk (prompt_bucket=4: an 11-token prompt is 3 chunks
    and its last token) give each greedy token the no-cache argmax, and prompts of 1 to 3
    chunks share one compiled prefill: its shapes depend on the cache length only."""
    prompts = [[1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [1, 10, 11]]
    result = generate(tiny_model, None, prompts, max_new_tokens=5, prompt_bucket=4)
    for prompt, generated in zip(prompts, result.token_ids):
        seq = jnp.asarray([prompt + generated])
        logits, _ = tiny_model(seq, positions_BxT=jnp.arange(seq.shape[1])[None],
                               valid_BxT=jnp.ones(seq.shape, bool))
        assert np.asarray(logits[0, len(prompt) - 1 : -1].argmax(-1)).tolist() == generated
    before = generation.TRACE_COUNTS["prefill"]
    for length in (2, 6, 9, 13):  # 1, 2, 2 and 3 chunks
        generate(tiny_model, None, [[1] + [7] * (length - 1)], max_new_tokens=5, prompt_bucket=4)
    assert generation.TRACE_COUNTS["prefill"] - before <= 1


def test_sharded_model_generates_the_same_tokens(tiny_model):
    """FSDP x TP on 8 fake CPU devices: the jitted prefill/decode follow the parameter shardings."""
    from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh, shard_model

    sharded = Transformer(tiny_model.config, rngs=nnx.Rngs(0))
    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tp=2))
    shard_model(sharded, mesh, ShardingRules.fsdp_tp())
    assert len(sharded.layers[0].attn.q_proj[...].sharding.device_set) == 8
    expected = generate(tiny_model, None, PROMPTS, max_new_tokens=5)
    assert generate(sharded, None, PROMPTS, max_new_tokens=5) == expected


def test_data_parallel_model_generates_the_same_tokens(tiny_model):
    """Data parallelism on 8 fake CPU devices: every weight whole on every device (no collective
    over the weights), the 8 rows split over "data"; the same tokens as on one device."""
    from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh, shard_model

    replicated = Transformer(tiny_model.config, rngs=nnx.Rngs(0))
    mesh = make_mesh(MeshConfig(data=8, fsdp=1, tp=1))
    shard_model(replicated, mesh, ShardingRules.data_parallel())
    q = replicated.layers.attn.q_proj[...]
    assert all(shard.data.shape == q.shape for shard in q.addressable_shards)  # whole on each device
    prompts = PROMPTS * 4
    expected = generate(tiny_model, None, prompts, max_new_tokens=5)
    assert generate(replicated, None, prompts, max_new_tokens=5, mesh=mesh) == expected


def test_decode_step_compiles_once(tiny_model):
    prompts = [[1, 2, 3], [1, 4], [1, 5, 6, 7]]
    jax.clear_caches()  # earlier tests may have compiled these shapes already
    before = dict(generation.TRACE_COUNTS)
    generate(tiny_model, None, prompts, max_new_tokens=5)
    generate(tiny_model, None, [[1, 9, 9, 9, 9], [1], [1, 8]], max_new_tokens=9)
    generate(tiny_model, None, prompts, max_new_tokens=12, sampler=Greedy())
    traced = {k: generation.TRACE_COUNTS[k] - before.get(k, 0) for k in ("prefill", "decode_step")}
    assert traced == {"prefill": 1, "decode_step": 1}


@pytest.mark.parametrize("layout", ["stacked", "per_layer"])
def test_decode_program_does_not_grow_with_depth(monkeypatch, layout):
    """The layers are one scan: a 16-layer model traces the decode step once and compiles it in
    about the time a 2-layer one takes. Only the reads of each layer's own cache arrays, and with
    per-layer weights each layer's matmuls, are per-layer code (one contraction per
    `lax.switch` branch, `models/kv_cache.py`, `models/layer_weights.py`): the program grows by
    under 10% (stacked weights) or 15% (per-layer weights: 10.6% measured) of the 2-layer program
    per extra layer (a Python loop of layers grew it by 24% per layer: 4.3x at 16 layers), and
    the 16-layer decode compiles in under twice the 2-layer time plus 0.5 s."""
    import time

    real_decode, calls = generation._decode, []

    class Spy:  # records the decode calls' shapes; lowering (compiled ahead) goes to the real one
        lower = staticmethod(real_decode.lower)

        def __call__(self, *args, **kwargs):  # shapes only: the decode state is donated
            calls.append(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
                                      if isinstance(x, jax.Array) else x, (args, kwargs)))
            return real_decode(*args, **kwargs)

    monkeypatch.setattr(generation, "_decode", Spy())
    jax.clear_caches()  # compile both depths here, whatever earlier tests compiled
    compile_ahead._compiled.clear()
    sizes, seconds, traces = {}, {}, {}
    cache_was_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # compile, never load from disk
    try:
        for num_layers in (2, 16):
            model = to_layout(Transformer(ModelConfig.tiny("llama", num_layers=num_layers, eos_token_ids=()),
                                         rngs=nnx.Rngs(0)), layout)
            generate(model, None, PROMPTS, max_new_tokens=1)  # prefill only: compiled here
            before = generation.TRACE_COUNTS["decode_step"]
            # process CPU time, not wall time: other processes on the machine do not count
            start = time.process_time()
            generate(model, None, PROMPTS, max_new_tokens=5)  # + tracing and compiling decode
            first = time.process_time() - start
            warm = []
            for _ in range(3):  # the least of three warm calls: one slow call must not hide the compile
                start = time.process_time()
                generate(model, None, PROMPTS, max_new_tokens=5)
                warm.append(time.process_time() - start)
            seconds[num_layers] = first - min(warm)
            traces[num_layers] = generation.TRACE_COUNTS["decode_step"] - before
            args, kwargs = calls[-1]
            sizes[num_layers] = len(real_decode.lower(*args, **kwargs).as_text())
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_was_on)
    assert traces == {2: 1, 16: 1}
    growth = {"stacked": 0.1, "per_layer": 0.15}[layout]  # per-layer weights: 7 matmul branches a layer
    assert (sizes[16] - sizes[2]) / 14 < growth * sizes[2], sizes
    assert seconds[16] < 2 * seconds[2] + 0.5, seconds


def test_sampling_same_key_same_output_and_independent_of_batch(tiny_model):
    sampler = Temperature(1.0, filters=(TopK(20),))
    run = lambda key, **kw: generate(tiny_model, None, PROMPTS, max_new_tokens=8, sampler=sampler,  # noqa: E731
                                     key=key, **kw).token_ids
    first = run(jax.random.key(1))
    assert run(jax.random.key(1)) == first
    assert run(jax.random.key(2)) != first
    assert run(jax.random.key(1), batch_size=1) == first  # same draws without batch mates


def test_sampling_requires_key(tiny_model):
    with pytest.raises(ValueError, match="key"):
        generate(tiny_model, None, PROMPTS, max_new_tokens=2, sampler=Temperature(1.0))


def test_stops_on_eos_and_pads(tiny_model):
    free = generate(tiny_model, None, PROMPTS, max_new_tokens=8).token_ids
    eos = free[0][3]
    assert eos not in free[0][:3]
    result = generate(tiny_model, None, PROMPTS, max_new_tokens=8, eos_token_ids=(eos,))
    assert result.token_ids[0] == free[0][:4]
    assert result.finish_reasons[0] == "eos"
    cut = free[1].index(eos) + 1 if eos in free[1] else 8
    assert result.token_ids[1] == free[1][:cut]


# --- against transformers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    pytest.importorskip("torch", reason="the transformers reference needs torch")
    root = tmp_path_factory.mktemp("gen_ckpt")
    return {family: make_hf_checkpoint(root, family) for family in FAMILIES}


@pytest.mark.parametrize("backend,layout", [("cpu", "stacked"), ("cpu", "per_layer"), ("gpu", "stacked")])
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_matches_transformers(checkpoints, family, backend, layout):
    """Every backend's program (the GPU's: stacked cache, whole prefill, fused attention, run
    here on the CPU) generates transformers' greedy tokens."""
    torch = pytest.importorskip("torch", reason="the transformers reference needs torch")
    path = checkpoints[family]
    model, config = load_pretrained(path, layout=layout)
    set_backend(model, backend)
    reference = load_hf_torch_model(path)
    prompts = [[1, 5, 9, 4, 12, 7, 20, 8, 30], [1, 11, 6]]  # left-padded batch of two lengths
    new = 10
    ours = generate(model, None, prompts, max_new_tokens=new, eos_token_ids=config.eos_token_ids)
    for prompt, generated, reason in zip(prompts, ours.token_ids, ours.finish_reasons):
        with torch.no_grad():
            out = reference.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                                     do_sample=False, max_new_tokens=new, eos_token_id=2, pad_token_id=0)
        expected = out[0, len(prompt):].tolist()
        assert generated == expected, family
        assert reason == ("eos" if expected[-1] == 2 else "length")


def test_stop_string_and_chat_template(checkpoints):
    path = checkpoints["llama"]
    model, _ = load_pretrained(path)
    tokenizer = load_tokenizer(path)
    free = generate(model, tokenizer, ["the cat sat on"], max_new_tokens=12, eos_token_ids=())
    words = free.texts[0].split()
    assert len(words) >= 4, free
    stop = " " + words[2]
    first = free.texts[0].find(stop)
    result = generate(model, tokenizer, ["the cat sat on"], max_new_tokens=12, eos_token_ids=(),
                      stop_strings=(stop,))
    assert result.finish_reasons == ["stop"]
    assert result.texts[0] == free.texts[0][:first]
    n = len(result.token_ids[0])
    assert result.token_ids[0] == free.token_ids[0][:n]
    assert stop in tokenizer.decode(free.token_ids[0][:n]) and stop not in tokenizer.decode(
        free.token_ids[0][: n - 1])

    chat = generate(model, tokenizer, ["why"], max_new_tokens=3, chat=True)
    expected_prompt = tokenizer.apply_chat_template([{"role": "user", "content": "why"}],
                                                    add_generation_prompt=True, tokenize=True)
    if isinstance(expected_prompt, dict) or hasattr(expected_prompt, "keys"):
        expected_prompt = expected_prompt["input_ids"]
    assert chat.prompt_token_ids[0] == list(expected_prompt)
