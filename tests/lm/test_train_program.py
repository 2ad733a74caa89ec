"""The compiled train and eval steps as an accelerator would run them, inspected on the CPU host:
what they hold and return (`memory_analysis()`), which dtypes their matmuls read (the lowered
StableHLO for the CPU, `cuda` and `tpu`), how remat scales their scratch memory with depth, and
that a run compiles each step once."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.lm.test_train_data import CharTokenizer
from w2s_jax.models import ModelConfig, Transformer
from w2s_jax.models.matmul import matmul
from w2s_jax.train import (
    CrossEntropyToTokens,
    SFTDataset,
    TrainConfig,
    apply_lora,
    make_eval_step,
    make_optimizer,
    make_train_step,
    train,
    trainable_filter,
)
from w2s_jax.train.compute import store_frozen_in

MODEL = ModelConfig.tiny()  # D=32, 4 query / 2 kv heads of 8, F=64, L=2, V=128
B, T = 8, 16
LORA = dataclasses.replace(TrainConfig.tiny(), compute_dtype="bfloat16", lora_rank=4, lora_alpha=8.0,
                           lora_targets=("q_proj", "v_proj"), max_len=T)


def _batch(batch_size=B, length=T):
    rng = np.random.default_rng(0)
    return {"tokens_BxT": jnp.asarray(rng.integers(3, MODEL.vocab_size, (batch_size, length)), jnp.int32),
            "positions_BxT": jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch_size, length)),
            "valid_BxT": jnp.ones((batch_size, length), bool),
            "completion_mask_BxT": jnp.ones((batch_size, length), bool)}


def _prepared(config, model_config=MODEL):
    """A float32-loaded model set up as `train` sets it up: LoRA added, the frozen base stored
    in the compute dtype."""
    model = Transformer(model_config, rngs=nnx.Rngs(0))
    if config.lora_rank is not None:
        apply_lora(model, rank=config.lora_rank, alpha=config.lora_alpha, targets=config.lora_targets,
                   key=jax.random.key(1))
    store_frozen_in(model, trainable_filter(config), config.compute_dtype)
    return model, make_optimizer(model, config)


def _traced_train_step(config, model_config=MODEL, platform="cpu", batch=None):
    model, optimizer = _prepared(config, model_config)
    step = make_train_step(CrossEntropyToTokens(), config, platform=platform)
    args = step.arguments(model, optimizer, _batch() if batch is None else batch)
    return step.jitted.trace(*args), args


def _nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_lora_train_step_updates_in_place_and_returns_only_what_it_trains():
    traced, (_, trainable, frozen, _, opt_state, _) = _traced_train_step(LORA)
    memory = traced.lower().compile().memory_analysis()
    # the adapters, by hand: per layer q (A: D x r, B: r x N*H) and v (A: D x r, B: r x K*H), float32
    r, D = 4, 32
    adapters = 2 * (D * r + r * 4 * 8 + D * r + r * 2 * 8) * 4
    assert _nbytes(trainable) == adapters == 3584
    assert _nbytes(frozen) > 10 * adapters  # the base, bfloat16, is most of the model
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(frozen))
    # AdamW keeps two moments per adapter weight, plus step counters
    assert 2 * adapters <= _nbytes(opt_state) <= 2 * adapters + 64
    state = _nbytes(trainable) + _nbytes(opt_state)
    assert memory.alias_size_in_bytes >= state  # donated: updated in place
    # besides the new state: two float32 scalars, and the output tuple's table of pointers
    outputs = len(jax.tree.leaves((trainable, opt_state))) + 2
    assert state <= memory.output_size_in_bytes <= state + 2 * 4 + 8 * outputs
    assert memory.output_size_in_bytes < _nbytes(frozen) // 4


def test_eval_step_returns_the_loss_and_count_alone():
    model, _ = _prepared(LORA)
    step = make_eval_step(CrossEntropyToTokens(), LORA)
    memory = step.jitted.trace(*step.arguments(model, _batch())).lower().compile().memory_analysis()
    assert memory.output_size_in_bytes <= 64
    assert memory.argument_size_in_bytes > 40_000  # the model was passed in, and not returned
    loss, count = step(model, _batch())
    assert loss.shape == () and float(count) == B * (T - 1)


def _dot_operand_types(stablehlo: str) -> list[tuple[str, str]]:
    dots = [line for line in stablehlo.splitlines() if "stablehlo.dot_general" in line]
    types = [re.search(r": \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)", line) for line in dots]
    assert all(types), [line for line, t in zip(dots, types) if not t]
    return [t.groups() for t in types]


@pytest.mark.parametrize("lora", [True, False])
def test_bf16_step_runs_every_matmul_on_bf16_operands_forward_and_backward(lora):
    config = LORA if lora else dataclasses.replace(LORA, lora_rank=None)
    traced, _ = _traced_train_step(config, platform="gpu")
    per_layer_forward = 7 + 2  # q, k, v, o, gate, up, down; scores and values
    for platforms in (None, ("cuda",), ("tpu",)):
        lowered = traced.lower() if platforms is None else traced.lower(lowering_platforms=platforms)
        operands = _dot_operand_types(lowered.as_text())
        # the layers are one scan body: forward, backward (two products each) and the LM head's
        assert len(operands) >= 3 * per_layer_forward + 3, (platforms, len(operands))
        assert set(operands) == {("bf16", "bf16")}, (platforms, sorted(set(operands)))
    # the same program in float32 compute reads float32 operands: the scan above can tell
    f32 = dataclasses.replace(config, compute_dtype="float32")
    assert set(_dot_operand_types(_traced_train_step(f32)[0].lower().as_text())) == {("f32", "f32")}


@pytest.mark.parametrize("shapes, transpose_b", [(((16, 24), (24, 8)), False), (((3, 16, 24), (24, 8)), False),
                                                 (((2, 3, 16, 24), (2, 3, 24, 8)), False),
                                                 (((3, 5, 24), (8, 24)), True)])
def test_bf16_matmul_gradients_equal_float64_and_stay_bf16(shapes, transpose_b):
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=s), jnp.bfloat16) for s in shapes)
    out = shapes[1][0] if transpose_b else shapes[1][-1]
    g = rng.normal(size=(*shapes[0][:-1], out))

    def loss(a, b):
        return jnp.sum(matmul(a, b, transpose_b=transpose_b).astype(jnp.float32) * g)

    da, db = jax.grad(loss, (0, 1))(a, b)
    assert da.dtype == db.dtype == jnp.bfloat16
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = b64.swapaxes(-1, -2) if transpose_b else b64  # y = a @ w
    da_ref = g @ w.swapaxes(-1, -2)
    if w.ndim == 2:
        dw_ref = a64.reshape(-1, a64.shape[-1]).T @ g.reshape(-1, out)
    else:
        dw_ref = a64.swapaxes(-1, -2) @ g
    db_ref = dw_ref.T if transpose_b else dw_ref
    # the cotangent and each result are rounded to bf16 once (2^-9 relative) and summed in float32
    for got, ref in ((da, da_ref), (db, db_ref)):
        err = np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max()
        assert err < 2 ** -7, err


def _temp_bytes(remat: str, layers: int) -> int:
    config = dataclasses.replace(LORA, remat=remat)
    traced, _ = _traced_train_step(config, dataclasses.replace(MODEL, num_layers=layers),
                                   batch=_batch(length=64))
    return traced.lower().compile().memory_analysis().temp_size_in_bytes


def test_remat_makes_scratch_memory_grow_less_with_depth():
    temp = {(remat, layers): _temp_bytes(remat, layers) for remat in ("none", "full") for layers in (2, 4)}
    plain = temp["none", 4] - temp["none", 2]
    remat = temp["full", 4] - temp["full", 2]
    assert plain > 0
    assert remat < 0.5 * plain, (remat, plain)
    # "dots" keeps the weight products (bf16, behind a custom VJP): per layer q, k, v, o, gate,
    # up, down outputs of B x 64 positions, 32 + 16 + 16 + 32 + 64 + 64 + 32 wide, 2 bytes each
    dots = _temp_bytes("dots", 4)
    products = 4 * B * 64 * (32 + 16 + 16 + 32 + 64 + 64 + 32) * 2
    assert temp["full", 4] + products / 2 < dots < temp["none", 4], (temp, dots, products)


def test_remat_defaults_to_on_off_the_cpu_and_reaches_the_model():
    config = TrainConfig.tiny()
    assert config.remat == "auto"
    assert config.remat_policy("cpu") is None
    assert config.remat_policy("gpu") == config.remat_policy("cuda") == config.remat_policy("tpu") == "full"
    assert dataclasses.replace(config, remat="none").remat_policy("gpu") is None
    assert dataclasses.replace(config, remat="dots").remat_policy("cpu") == "dots"
    with pytest.raises(ValueError, match="TrainConfig.remat must be one of .*'some'"):
        dataclasses.replace(config, remat="some")
    # "auto" for a GPU lowers to the program of remat="full"; for the CPU, to that of "none"
    def program(remat, platform):
        return _traced_train_step(dataclasses.replace(LORA, remat=remat), platform=platform)[0].lower().as_text()

    assert program("auto", "gpu") == program("full", "cpu")
    assert program("auto", "cpu") == program("none", "gpu")
    assert program("full", "cpu") != program("none", "cpu")


class _CompileCounter:
    """Counts JAX traces and XLA compilations (jax.monitoring events) while installed."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.counts = dict.fromkeys(self.EVENTS, 0)

    def __call__(self, event, duration, **kwargs):
        if event in self.counts:
            self.counts[event] += 1

    def snapshot(self) -> tuple[int, int]:
        return tuple(self.counts[e] for e in self.EVENTS)


@pytest.mark.parametrize("config", [LORA, dataclasses.replace(TrainConfig.tiny(), max_len=8, grad_accum_steps=2)],
                         ids=["lora-bf16", "full-f32-accum"])
def test_after_the_first_step_and_evaluation_a_run_compiles_nothing(config):
    rows = [{"prompt": f"q{i}", "completion": "ab"[i % 2] + "cde"[i // 4]} for i in range(12)]
    data = SFTDataset(rows, CharTokenizer(), max_len=config.max_len)
    config = dataclasses.replace(config, total_steps=7, eval_every=2, warmup_steps=1)
    counter, seen = _CompileCounter(), {}
    jax.monitoring.register_event_duration_secs_listener(counter)
    try:
        train(Transformer(MODEL, rngs=nnx.Rngs(0)), data, config=config, eval_data=data, show_progress=False,
              callbacks=[lambda step, metrics: seen.__setitem__(step, counter.snapshot())])
    finally:
        jax.monitoring.unregister_event_duration_listener(counter)
    traces, compiles = seen[7]
    assert compiles > 0 and traces > 0  # the counter sees the run's compilations
    # step 2 ran the first evaluation; steps 3-7 and the evaluations at 4 and 6 reuse everything
    assert seen[2] == seen[3] == seen[7], seen
