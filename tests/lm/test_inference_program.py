"""Inference compiles once per length bucket: after the first `generate` and `score` calls, more
calls whose batches fall in the same buckets (cache length and new-token bucket for generation;
padded length, row bucket and scored-token bucket for scoring) trace and compile nothing new.

Counted from JAX's own monitoring events (`_CompileCounter`, as the train-step test counts
them), so every jitted function and every eager op outside one is seen, not only the two
functions generation counts itself. Both the CPU decision (per-layer weights, chunked prefill)
and the accelerators' (stacked weights, one whole prefill per prompt bucket) are run here on
the CPU host: the GPU decision's program is plain XLA in float32 (cuDNN is asked for in 16-bit
only), so it runs on any platform.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from tests.lm.test_train_program import _CompileCounter
from w2s_jax.inference import generate, score
from w2s_jax.models import ModelConfig, Transformer, set_backend, to_layout
from w2s_jax.models.backend import CPU, GPU

CONFIG = ModelConfig.tiny(eos_token_ids=(2,))  # D=32, 4 query / 2 kv heads of 8, L=2, V=128
BATCH, BUCKET = 4, 16


def _model(backend):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    if backend.layout == "per_layer":
        to_layout(model, "per_layer")  # what load_pretrained gives a CPU user
    set_backend(model, backend)
    return model


def _prompts(lengths, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, CONFIG.vocab_size, n).tolist() for n in lengths]


def _counted(calls):
    """(traces, compiles) after each of `calls`, run in order."""
    counter, seen = _CompileCounter(), []
    jax.monitoring.register_event_duration_secs_listener(counter)
    try:
        for call in calls:
            call()
            seen.append(counter.snapshot())
    finally:
        jax.monitoring.unregister_event_duration_listener(counter)
    return seen


@pytest.mark.parametrize("backend", [CPU, GPU], ids=["cpu", "gpu-decision"])
def test_generate_compiles_nothing_new_within_one_bucket(backend):
    model = _model(backend)

    def run(lengths, seed, max_new_tokens, eos=(2,)):
        return lambda: generate(model, None, _prompts(lengths, seed), max_new_tokens=max_new_tokens,
                                batch_size=BATCH, prompt_bucket=BUCKET, eos_token_ids=eos, streams=1)

    # prompts of 3-16 tokens fill one 16-slot prompt bucket and one 64-slot cache; 5 to 12 new
    # tokens fall in one 16-token bucket; a short last batch is filled to BATCH rows
    seen = _counted([run([16, 3, 9, 12, 7], 0, 5), run([4, 16, 11], 1, 12), run([15] * 9, 2, 8),
                     run([6, 5], 3, 9, eos=())])
    assert seen[0][1] > 0  # the counter sees the first call's compilations
    assert seen[0] == seen[1] == seen[2], seen
    # other stop tokens are another program (static): the count can move
    assert seen[3][1] > seen[2][1], seen


@pytest.mark.parametrize("backend", [CPU, GPU], ids=["cpu", "gpu-decision"])
def test_score_compiles_nothing_new_within_one_bucket(backend):
    model = _model(backend)

    def run(prompt_lengths, completion_lengths, seed):
        prompts, completions = _prompts(prompt_lengths, seed), _prompts(completion_lengths, seed + 1)
        return lambda: score(model, None, prompts, completions, batch_size=BATCH, length_bucket=BUCKET, streams=1)

    # every pair fits 16 slots; every batch is 3-4 rows (a row bucket of 4) with 9-16 scored
    # tokens (a bucket of 16 gathered positions)
    seen = _counted([run([5, 9, 3, 4], [3, 2, 4, 3], 0), run([10, 2, 7], [6, 3, 4], 1),
                     run([4, 4, 4, 4, 8, 6, 4, 4], [2, 3, 4, 3, 5, 5, 2, 2], 2)])
    assert seen[0][1] > 0
    assert seen[0] == seen[1] == seen[2], seen
    # a longer batch is a new bucket: the count can move (the test above could fail)
    longer = _counted([run([20, 9, 13, 4], [3, 2, 4, 3], 3)])
    assert longer[0][1] > 0
