"""What each backend runs, read from the programs lowered for it from this (CPU) host.

A model given the GPU or TPU decision (`set_backend`) is lowered for "cuda" or "tpu" with
`jit(f).trace(...).lower(lowering_platforms=...)`, and its StableHLO text is checked for what an
accelerator must not run on the per-token path: conditionals (`stablehlo.case` / `if`, which
XLA:GPU runs by reading the branch index on the host), loops whose trip count is data (a host
round-trip per iteration), host callbacks, sends, receives and outfeeds; and the number of
optimization barriers must not grow with depth. The values those programs compute are checked
against transformers in `test_generate.py` and `test_score.py`.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from w2s_jax.inference import Greedy, generation
from w2s_jax.inference.prefill import CacheSpec
from w2s_jax.inference.scoring import _completion_logprobs
from w2s_jax.inference.streams import check_streams, default_streams
from w2s_jax.models import ModelConfig, Transformer, init_cache, to_layout
from w2s_jax.models.backend import CPU, GPU, TPU, for_devices, for_platform, set_backend

ACCELERATORS = [("cuda", GPU), ("tpu", TPU)]
FAMILIES = ["llama", "qwen3", "gemma2"]  # plain GQA; q/k norm; softcap, sliding window, sandwich norms


def _model(family="llama", num_layers=2, backend=GPU, dtype=jnp.float32):
    config = ModelConfig.tiny(family, num_layers=num_layers, eos_token_ids=(2,))
    if family == "gemma2":
        config = dataclasses.replace(config, sliding_window=4, sliding_layers=tuple(range(0, num_layers, 2)))
    return Transformer(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype, backend=backend)


def _prefill_args(model, *, batch=2, prompt_len=16, cache_len=32, backend=GPU):
    graphdef, state = nnx.split(model)
    tokens = jnp.ones((batch, cache_len), jnp.int32)
    valid = jnp.arange(cache_len)[None].repeat(batch, 0) < prompt_len
    whole = backend.prefill == "whole"
    args = (graphdef, state, tokens, valid, None if whole else jnp.asarray(1, jnp.int32), jnp.ones(batch, bool),
            jax.random.key(0), jnp.arange(batch, dtype=jnp.int32))
    kw = dict(sampler=Greedy(), eos_ids=(2,), num_new=16, chunk=prompt_len,
              cache_spec=CacheSpec(model.config, batch, cache_len, jnp.dtype(model.dtype), None))
    return args, kw


def _lowered_generation(model, platform, backend):
    """StableHLO text of generation's prefill and decode loop, lowered for `platform`."""
    args, kw = _prefill_args(model, backend=backend)
    prefill = generation._prefill.trace(*args, **kw)
    decode = generation._decode.trace(args[0], args[1], prefill.out_info, jnp.asarray(4, jnp.int32), args[6],
                                      args[7], sampler=Greedy(), eos_ids=(2,), pad_id=0)
    lower = lambda traced: traced.lower(lowering_platforms=(platform,)).as_text()  # noqa: E731
    return lower(prefill), lower(decode)


def _lowered_decode_step(model, platform):
    """One decode step (a token per row through the model with its cache), lowered for `platform`."""
    graphdef, state = nnx.split(model)
    cache = init_cache(model.config, batch_size=2, max_len=32, stacked=True)

    def step(state, cache, token_Bx1):
        logits, cache = nnx.merge(graphdef, state)(token_Bx1, positions_BxT=jnp.full((2, 1), 3),
                                                   valid_BxT=jnp.ones((2, 1), bool), cache=cache)
        return logits, cache

    return jax.jit(step).trace(state, cache, jnp.ones((2, 1), jnp.int32)).lower(
        lowering_platforms=(platform,)).as_text()


def _whiles(text):
    """(trip-count bound, data dependent?) of each `stablehlo.while` in `text`: a loop is static
    when its condition compares its counter with a constant of the condition region."""
    loops = []
    for match in re.finditer(r"stablehlo\.while\(", text):
        cond = text[match.end():text.index("} do {", match.end())]
        compare = re.search(r"stablehlo\.compare\s+LT,\s*(%[\w#]+),\s*(%[\w#]+)", cond)
        constants = set(re.findall(r"(%[\w#]+) = stablehlo\.constant", cond))
        loops.append(compare is not None and compare.group(2) in constants)
    return loops


def _barriers(text):
    return len(re.findall(r"stablehlo\.optimization_barrier", text))


def _no_host_traffic(text):
    assert not re.search(r"callback", text), "a host callback"
    for op in ("send", "recv", "outfeed", "infeed"):
        assert f"stablehlo.{op}" not in text, op


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("platform,backend", ACCELERATORS)
def test_accelerator_generation_has_no_conditionals_and_no_data_dependent_loops(family, platform, backend):
    prefill, decode = _lowered_generation(_model(family, backend=backend), platform, backend)
    step = _lowered_decode_step(_model(family, backend=backend), platform)
    for text in (prefill, decode, step):
        assert "stablehlo.case" not in text and "stablehlo.if" not in text
        _no_host_traffic(text)
    assert _whiles(step) == [True]  # the layer scan, a static trip count
    assert _whiles(prefill) == [True]  # the layer scan; no chunk loop, no block loop
    # the decode loop itself (until every row is done: data by design) holds the layer scan only
    assert sorted(_whiles(decode)) == [False, True]


@pytest.mark.parametrize("platform,backend", ACCELERATORS)
def test_accelerator_scoring_has_no_conditionals_and_no_data_dependent_loops(platform, backend):
    model = _model("llama", backend=backend)
    graphdef, state = nnx.split(model)
    tokens = jnp.ones((4, 256), jnp.int32)  # long enough that the CPU backend scores in chunks
    text = _completion_logprobs.trace(graphdef, state, tokens, jnp.ones((4, 256), bool), jnp.zeros(8, jnp.int32),
                                      jnp.ones(8, jnp.int32)).lower(lowering_platforms=(platform,)).as_text()
    assert "stablehlo.case" not in text and "stablehlo.if" not in text
    _no_host_traffic(text)
    assert all(_whiles(text))  # the layer scan and the logits' row chunks, static trip counts


@pytest.fixture
def cudnn_present(monkeypatch):
    """Lowering cuDNN's fused attention asks the installed cuDNN's version first; this host has
    none, so the check answers for one (the program text does not depend on it)."""
    from jax._src.cudnn import fused_attention_stablehlo

    monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 91000)


@pytest.mark.parametrize("platform,backend", ACCELERATORS)
def test_accelerator_optimization_barriers_do_not_grow_with_depth(platform, backend, cudnn_present):
    for dtype in (jnp.float32, jnp.bfloat16):
        counts = []
        for num_layers in (2, 4):
            prefill, decode = _lowered_generation(_model("llama", num_layers, backend, dtype), platform, backend)
            counts.append((_barriers(prefill), _barriers(decode)))
        assert counts[0] == counts[1], (dtype, counts)


def test_the_cpu_backend_keeps_its_tuned_program():
    """The CPU program is the one tuned for XLA:CPU: per-layer weights and cache read through a
    switch, the chunked prefill's loops; so the accelerator tests above test a real choice."""
    model = _model("llama", backend=CPU)
    to_layout(model, "per_layer")
    prefill, decode = _lowered_generation(model, "cpu", CPU)
    assert "stablehlo.case" in decode and "stablehlo.case" in prefill
    assert False in _whiles(prefill)  # the chunk loop's trip count is an argument


def test_backend_decisions_are_per_platform_and_checked():
    assert for_platform("cuda") is GPU and for_platform("rocm") is GPU and for_platform("tpu") is TPU
    assert for_devices(jax.devices("cpu")[:2]) is CPU
    assert _model(backend=None).backend is CPU  # the default device here
    for accelerator in (GPU, TPU):
        assert accelerator.conditional_free and not accelerator.barriers and accelerator.max_streams == 1
    assert not CPU.conditional_free
    with pytest.raises(ValueError, match="platform 'metal'"):
        for_platform("metal")
    with pytest.raises(ValueError, match="prefill='eager'"):
        dataclasses.replace(GPU, prefill="eager")
    model = _model(backend=CPU)
    to_layout(model, "per_layer")
    with pytest.raises(ValueError, match="reads stacked weights"):
        set_backend(model, "cuda")
    with pytest.raises(ValueError, match="per_layer.*cuda|gpu backend"):
        to_layout(_model(backend=GPU), "per_layer")


def test_streams_on_an_accelerator_are_refused():
    assert default_streams(None, GPU) == 1 and default_streams(None, TPU) == 1
    with pytest.raises(ValueError, match="streams=2 on gpu"):
        check_streams(2, None, GPU)
    check_streams(2, None, CPU)


def test_fused_attention_is_cudnns_in_16_bit_on_gpu(cudnn_present):
    """A bf16 prefill lowered for cuda calls cuDNN's fused attention; float32, and any TPU
    program, use XLA's lowering of the same function (no fused-attention custom call)."""
    def prefill_text(dtype, platform, backend):
        model = _model("llama", backend=backend, dtype=dtype)
        args, kw = _prefill_args(model, backend=backend)
        return generation._prefill.trace(*args, **kw).lower(lowering_platforms=(platform,)).as_text()

    assert "__cudnn$fmha" in prefill_text(jnp.bfloat16, "cuda", GPU)
    assert "__cudnn$fmha" not in prefill_text(jnp.float32, "cuda", GPU)
    assert "__cudnn$fmha" not in prefill_text(jnp.bfloat16, "tpu", TPU)


def test_gpu_training_gradient_runs_cudnn_attention_both_ways(cudnn_present):
    """The gradient of a bf16 loss lowered for cuda: cuDNN's fused attention forward and backward,
    no conditional, and none of XLA:CPU's optimization barriers (those exist for XLA:CPU only)."""
    model = _model("llama", backend=GPU, dtype=jnp.bfloat16)
    graphdef, state = nnx.split(model)
    tokens, valid = jnp.ones((2, 16), jnp.int32), jnp.ones((2, 16), bool)

    def loss(state):
        logits, _ = nnx.merge(graphdef, state)(tokens, positions_BxT=jnp.broadcast_to(jnp.arange(16), (2, 16)),
                                               valid_BxT=valid)
        return logits.astype(jnp.float32).mean()

    text = jax.jit(jax.grad(loss)).trace(state).lower(lowering_platforms=("cuda",)).as_text()
    assert set(re.findall(r"@(__cudnn\$\w+)", text)) == {"__cudnn$fmhaScaleBiasSoftmax",
                                                         "__cudnn$fmhaScaleBiasSoftmaxBackward"}
    assert "stablehlo.case" not in text and _barriers(text) == 0
    cpu = Transformer(model.config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, backend=CPU)
    cpu_graphdef, cpu_state = nnx.split(cpu)
    cpu_text = jax.jit(jax.grad(lambda s: nnx.merge(cpu_graphdef, s)(
        tokens, positions_BxT=jnp.broadcast_to(jnp.arange(16), (2, 16)), valid_BxT=valid)[0].astype(jnp.float32).mean())
    ).trace(cpu_state).lower(lowering_platforms=("cpu",)).as_text()
    assert _barriers(cpu_text) > 0  # the CPU program keeps its barriers: the check above tests a choice


def _backward_text(fn, backend, *shapes):
    """The gradient of `sum(fn(*args))` with `backend` active in the forward pass alone (as in a
    model call), lowered for cuda: JAX traces a custom VJP's backward rule after the forward
    call has returned, outside `use_backend`, where the host's decision (the CPU's) is active."""
    from w2s_jax.models.backend import use_backend

    def loss(*args):
        with use_backend(backend):
            y = fn(*args)
        return y.astype(jnp.float32).sum()

    args = [jnp.ones(s, jnp.bfloat16) for s in shapes]
    return jax.jit(jax.grad(loss, tuple(range(len(args))))).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


def test_custom_backward_passes_run_the_forward_passes_decision():
    """A one-row bf16 product is padded to two rows on the CPU alone (`Backend.pad_single_row`):
    the tied head's backward (`dense_transposed`) traced for a GPU decision has no padding, for
    the CPU decision it has; the bf16 matmul's backward reads no decision (the same program)."""
    from w2s_jax.models.layers import dense_transposed
    from w2s_jax.models.matmul import matmul

    head = {b.platform: _backward_text(dense_transposed, b, (1, 32), (128, 32)) for b in (GPU, CPU)}
    assert "stablehlo.pad" not in head["gpu"] and "tensor<2x128xbf16>" not in head["gpu"]
    assert "stablehlo.pad" in head["cpu"] and "tensor<2x128xbf16>" in head["cpu"]
    product = {b.platform: _backward_text(matmul, b, (3, 32), (32, 16)) for b in (GPU, CPU)}
    assert product["gpu"] == product["cpu"] and "stablehlo.pad" not in product["gpu"]


def test_tpu_training_gradient_runs_splash_attention_both_ways():
    """The gradient of a bf16 loss over 128 slots lowered for tpu: the splash kernel forward and
    its two backward kernels (dq, dk/dv) per layer body, no conditional, no barrier. Over 16
    slots (not a multiple of the kernel's block) the same model runs XLA's attention."""
    from w2s_jax.models.attention import SPLASH_BLOCK

    model = _model("llama", backend=TPU, dtype=jnp.bfloat16)
    graphdef, state = nnx.split(model)

    def text(T):
        tokens, valid = jnp.ones((2, T), jnp.int32), jnp.arange(T)[None].repeat(2, 0) < T - 5

        def loss(state):
            logits, _ = nnx.merge(graphdef, state)(tokens, positions_BxT=jnp.broadcast_to(jnp.arange(T), (2, T)),
                                                   valid_BxT=valid)
            return logits.astype(jnp.float32).mean()

        return jax.jit(jax.grad(loss)).trace(state).lower(lowering_platforms=("tpu",)).as_text()

    long = text(SPLASH_BLOCK)
    assert len(re.findall(r"stablehlo\.custom_call @tpu_custom_call", long)) == 3
    assert "stablehlo.case" not in long and _barriers(long) == 0
    assert "tpu_custom_call" not in text(16)
