"""generate compiles its prefill and decode programs side by side, once per shape, and only the
programs a call runs (`w2s_jax/inference/compile_ahead.py`)."""

import threading

import jax
from flax import nnx

from w2s_jax.inference import Temperature, TopK, compile_ahead, generate
from w2s_jax.models import ModelConfig, Transformer


def _compiles(run) -> list[tuple[str, str]]:
    """(program, thread) for each XLA compilation of generation's programs while `run()` runs."""
    seen = []

    def listener(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append((kwargs.get("fun_name", ""), threading.current_thread().name))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        run()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return sorted((name, thread) for name, thread in seen if name in ("jit(_prefill)", "jit(_decode)"))


def test_prefill_and_decode_compile_side_by_side_once_per_shape():
    model = Transformer(ModelConfig.tiny("llama", num_layers=2, eos_token_ids=()), rngs=nnx.Rngs(0))
    jax.clear_caches()  # other tests may have compiled these shapes
    compile_ahead._compiled.clear()
    prompts = [[1, 5, 6], [1, 7], [1, 8, 9, 10]]

    first = _compiles(lambda: generate(model, None, prompts, max_new_tokens=6))
    assert [name for name, _ in first] == ["jit(_decode)", "jit(_prefill)"]  # each exactly once
    assert all(thread != threading.main_thread().name for _, thread in first), first  # in threads
    # the same shapes again (other prompts, the same buckets): nothing compiles, ahead or at the call
    assert _compiles(lambda: generate(model, None, [[1, 2], [1, 3], [1]], max_new_tokens=5)) == []
    # one new token: the decode loop never runs, so only the prefill of the new shape compiles
    only_prefill = _compiles(lambda: generate(model, None, prompts, max_new_tokens=1, batch_size=4))
    assert [name for name, _ in only_prefill] == ["jit(_prefill)"]
    # a sampler with a PRNG key, two batches: still one compilation of each
    sampled = _compiles(lambda: generate(model, None, prompts, max_new_tokens=20, sampler=Temperature(
        0.8, filters=(TopK(5),)), key=jax.random.key(1), batch_size=2))
    assert [name for name, _ in sampled] == ["jit(_decode)", "jit(_prefill)"]
