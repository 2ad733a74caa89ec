"""Batches in flight at once (`w2s_jax/inference/streams.py`): the same results as one at a time,
really concurrent, in order, errors raised, and each new shape compiled once."""

import threading
import time

import jax
import pytest
from flax import nnx

from w2s_jax.inference import Temperature, TopK, compile_ahead, generate, generation, streams
from w2s_jax.models import ModelConfig, Transformer


@pytest.fixture(scope="module")
def tiny_model():
    return Transformer(ModelConfig.tiny("llama", num_layers=2, eos_token_ids=(7,)), rngs=nnx.Rngs(3))


# prompts of several lengths: with batch_size=2 the batches fall into different cache lengths
PROMPTS = [[1, 5], [1, 9, 4, 4, 2], [1] + [3] * 40, [1, 2, 3], [1] + [6] * 70, [1, 8]]


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_streams_give_the_same_results_as_one_batch_at_a_time(tiny_model, sampled):
    kw = dict(max_new_tokens=9, batch_size=2, prompt_bucket=16)
    if sampled:
        kw.update(sampler=Temperature(1.5, filters=(TopK(20),)), key=jax.random.key(4))
    one = generate(tiny_model, None, PROMPTS, streams=1, **kw)
    for n in (2, 3):
        many = generate(tiny_model, None, PROMPTS, streams=n, **kw)
        assert many.token_ids == one.token_ids
        assert many.finish_reasons == one.finish_reasons
        assert many.prompt_token_ids == one.prompt_token_ids
    assert len({tuple(t) for t in one.token_ids}) > 1  # the rows really differ


def test_a_new_shape_traces_once_when_batches_reach_it_together(tiny_model):
    # 13 new tokens (bucket 16 -> 32 slots of generated tokens with new_token_bucket=32): a shape
    # no other test uses, reached by four batches of the same shape at once
    before = dict(generation.TRACE_COUNTS)
    generate(tiny_model, None, [[1, 2, 3]] * 8, max_new_tokens=13, batch_size=2, new_token_bucket=32,
             prompt_bucket=16, streams=4)
    traced = {k: generation.TRACE_COUNTS[k] - before.get(k, 0) for k in ("prefill", "decode_step")}
    assert traced == {"prefill": 1, "decode_step": 1}


def test_map_batches_runs_batches_at_once_in_order():
    both_running = threading.Barrier(2, timeout=10)  # breaks unless two batches run together

    def fn(i):
        if i < 2:
            both_running.wait()
        time.sleep(0.01 * (5 - i))  # later batches finish first
        return i * i

    assert streams.map_batches(fn, list(range(5)), streams=2, desc="t") == [0, 1, 4, 9, 16]
    assert streams.map_batches(lambda i: -i, [3, 4], streams=1, desc="t") == [-3, -4]


def test_map_batches_starts_the_costliest_batches_first():
    started, lock = [], threading.Lock()

    def fn(i):
        with lock:
            started.append(i)
        time.sleep(0.02)
        return i

    costs = [1, 5, 2, 9, 3]
    assert streams.map_batches(fn, list(range(5)), streams=2, desc="t", costs=costs) == [0, 1, 2, 3, 4]
    assert set(started[:2]) == {3, 1}  # the two dearest start together
    assert started[2:] == [4, 2, 0]


def test_map_batches_raises_a_batch_error_and_skips_batches_not_started():
    started = []

    def fn(i):
        started.append(i)
        if i == 1:
            raise ValueError("batch 1 is bad")
        time.sleep(0.05)
        return i

    with pytest.raises(ValueError, match="batch 1 is bad"):
        streams.map_batches(fn, list(range(20)), streams=2, desc="t")
    time.sleep(0.2)
    assert len(started) < 20


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_check_streams_names_a_bad_value(bad):
    with pytest.raises(ValueError, match="streams must be an integer >= 1"):
        streams.check_streams(bad, None)


def test_streams_with_a_mesh_is_refused_and_the_default_stays_one(tiny_model):
    from w2s_jax.parallel import MeshConfig, make_mesh

    mesh = make_mesh(MeshConfig(data=2, fsdp=1, tp=1), jax.devices()[:2])
    with pytest.raises(ValueError, match="streams=2 with a mesh"):
        streams.check_streams(2, mesh)
    assert streams.default_streams(mesh) == 1
    with pytest.raises(ValueError, match="streams=2 with a mesh"):
        generate(tiny_model, None, PROMPTS[:2], max_new_tokens=2, batch_size=2, mesh=mesh, streams=2)


def test_default_streams_follow_the_usable_cores(monkeypatch):
    assert jax.default_backend() == "cpu"
    monkeypatch.setattr(streams, "_usable_cores", lambda: 1)
    assert streams.default_streams() == 1
    monkeypatch.setattr(streams, "_usable_cores", lambda: 8)
    assert streams.default_streams() == 2


def test_compile_side_by_side_lowers_once_for_racing_callers_and_retries_after_a_failure():
    calls = []
    release = threading.Event()

    def lower():
        calls.append(threading.current_thread().name)
        release.wait(10)
        return []

    key = ("test-streams", object())
    threads = [threading.Thread(target=compile_ahead.compile_side_by_side, args=(key, lower)) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # all three are in: one lowering, two waiting
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1

    failing = ("test-streams-failing", object())

    def broken():
        raise RuntimeError("cannot lower")

    with pytest.raises(RuntimeError, match="cannot lower"):
        compile_ahead.compile_side_by_side(failing, broken)
    compile_ahead.compile_side_by_side(failing, lambda: calls.append("retry") or [])  # not remembered as done
    assert calls[-1] == "retry"


def test_scoring_and_top_k_in_streams_equal_one_batch_at_a_time(tiny_model):
    from w2s_jax.inference import next_token_topk, score

    prompts = [p[:-1] or [1] for p in PROMPTS]
    completions = [[4, 5, 6][: 1 + i % 3] for i in range(len(PROMPTS))]
    one = score(tiny_model, None, prompts, completions, batch_size=2, streams=1)
    many = score(tiny_model, None, prompts, completions, batch_size=2, streams=3)
    assert [r.token_logprobs for r in many] == [r.token_logprobs for r in one]
    top_one = next_token_topk(tiny_model, prompts, completions, 3, batch_size=2, streams=1)
    top_many = next_token_topk(tiny_model, prompts, completions, 3, batch_size=2, streams=2)
    for a, b in zip(top_one, top_many):
        assert a.token_ids == b.token_ids
        assert (a.topk_ids == b.topk_ids).all() and (a.topk_probs == b.topk_probs).all()
    with pytest.raises(ValueError, match="streams must be an integer"):
        score(tiny_model, None, prompts, completions, streams=0)


def test_scoring_in_streams_compiles_a_new_shape_once(tiny_model):
    from w2s_jax.inference import score

    seen = []

    def listener(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append(kwargs.get("fun_name", ""))

    jax.clear_caches()  # other tests may have scored this shape
    compile_ahead._compiled.clear()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        # six pairs of one padded length, three batches at once
        score(tiny_model, None, [[1] + [2] * 40] * 6, [[3, 4]] * 6, batch_size=2, length_bucket=48, streams=3)
        first = [name for name in seen if "logprobs" in name]
        seen.clear()
        score(tiny_model, None, [[1] + [5] * 39] * 6, [[3, 4, 6]] * 6, batch_size=2, length_bucket=48, streams=3)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert first == ["jit(_completion_logprobs)"]
    assert [name for name in seen if "logprobs" in name] == []
