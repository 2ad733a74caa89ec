"""The fine-tuning loop on the real Transformer: learning, one compile, accumulation, LoRA, NaN
handling and exact resume. Float32 on CPU is deterministic, so "same run" checks are exact."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.lm.test_train_data import CharTokenizer
from w2s_jax.models import ModelConfig, Transformer
from w2s_jax.train import (
    Checkpointer,
    CrossEntropyToTokens,
    KLToTeacher,
    LoRAWeight,
    accumulated_loss_and_grads,
    SFTDataset,
    TrainConfig,
    apply_lora,
    make_optimizer,
    merge_lora,
    train,
)

MODEL = ModelConfig.tiny(num_layers=1)  # D=32, V=128
ROWS = [{"prompt": f"q{i}", "completion": "ab"[i % 2] + "cd"[i // 4]} for i in range(8)]
CFG = dataclasses.replace(TrainConfig.tiny(), max_len=8, total_steps=6, learning_rate=1e-2)


def _model(seed=0):
    return Transformer(MODEL, rngs=nnx.Rngs(seed))


def _data(rows=ROWS, **kw):
    return SFTDataset(rows, CharTokenizer(), max_len=CFG.max_len, **kw)


def _params(model, kind=nnx.Param):
    return {path: np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(model, kind))}


def _logits(model, batch):
    logits, _ = model(jnp.asarray(batch["tokens_BxT"]), positions_BxT=jnp.asarray(batch["positions_BxT"]),
                      valid_BxT=jnp.asarray(batch["valid_BxT"]))
    return np.asarray(logits)


class CountingLoss:
    """Cross-entropy that counts how often it is traced (its Python body runs once per trace)."""

    def __init__(self):
        self.traces = 0

    def __call__(self, logits, batch):
        self.traces += 1
        return CrossEntropyToTokens()(logits, batch)


def test_loss_decreases_on_a_memorization_task_and_each_step_compiles_once():
    cfg = dataclasses.replace(CFG, total_steps=25, learning_rate=2e-2, eval_every=12)
    loss = CountingLoss()
    result = train(_model(), _data(), config=cfg, loss_fn=loss, eval_data=_data(), show_progress=False)
    assert result.train_losses[25] < 0.25 * result.train_losses[1], result.train_losses
    assert loss.traces == 2  # one train-step and one eval-step trace for 25 steps / 3 evaluations
    assert sorted(result.eval_losses) == [12, 24, 25]
    # the eval set is the training set, evaluated after the last update: below step 25's loss
    assert result.eval_losses[25] < result.train_losses[25]


def test_grad_accumulation_equals_one_big_batch():
    # unequal completion lengths: the micro-batches score different numbers of tokens
    rows = [{"prompt": f"q{i}" * (1 + i % 3), "completion": "xy"[: 1 + i % 2] + "z" * (i // 4)} for i in range(8)]
    batch = jax.tree.map(jnp.asarray, _data(rows).collate(range(8)))
    graphdef, params, rest = nnx.split(_model(), nnx.Param, ...)

    @functools.partial(jax.jit, static_argnames="accum")
    def loss_and_grads(params, accum):
        return accumulated_loss_and_grads(graphdef, params, rest, batch, loss_fn=CrossEntropyToTokens(),
                                          accum=accum, compute_dtype=jnp.float32)

    big_loss, big_grads = loss_and_grads(params, 1)
    loss, grads = loss_and_grads(params, 4)
    # token-weighted micro-batch means = the mean over all scored tokens; only float32 summation
    # order differs.
    np.testing.assert_allclose(float(loss), float(big_loss), rtol=1e-6)
    for g, big in zip(jax.tree.leaves(grads), jax.tree.leaves(big_grads), strict=True):
        scale = np.abs(np.asarray(big)).max()
        assert scale > 0
        np.testing.assert_allclose(np.asarray(g), np.asarray(big), atol=1e-5 * scale, rtol=0)


def test_lora_trains_only_adapters_and_merges_exactly():
    cfg = dataclasses.replace(CFG, lora_rank=4, lora_alpha=8.0, lora_targets=("q_proj", "v_proj", "down_proj"),
                              learning_rate=5e-2)
    model = _model()
    base_before = _params(model)
    result = train(model, _data(), config=cfg, show_progress=False)
    assert result.train_losses[6] < result.train_losses[1]
    wrapped = [n for _, n in nnx.iter_graph(model) if isinstance(n, LoRAWeight)]
    assert len(wrapped) == 3
    assert all(np.abs(np.asarray(w.lora_b[...])).max() > 0 for w in wrapped)  # B left its zero init
    # every base parameter is bit-identical: only LoRAParams were updated
    base_only = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))
    after = {tuple(p for p in path if p != "base"): v for path, v in _params(model, base_only).items()}
    assert set(after) == set(base_before)
    for path, value in base_before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=str(path))
    batch = _data().collate(range(8))
    lora_logits = _logits(model, batch)
    merge_lora(model)
    assert not any(isinstance(n, LoRAWeight) for _, n in nnx.iter_graph(model))
    assert set(_params(model)) == set(base_before)  # the plain model's parameter tree again
    np.testing.assert_allclose(_logits(model, batch), lora_logits, atol=1e-5, rtol=0)
    assert np.abs(_logits(_model(), batch) - lora_logits).max() > 1e-3  # LoRA changed the model
    with pytest.raises(ValueError, match="no nnx.Param attribute named any of \\('wq',\\)"):
        apply_lora(_model(), rank=2, alpha=2.0, targets=("wq",), key=jax.random.key(0))


def test_nan_loss_raises_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    cfg = dataclasses.replace(CFG, checkpoint_every=2)
    model = _model()

    def poison_after_step_2(step, metrics):
        if step == 2:
            model.embedding[...] = jnp.full_like(model.embedding[...], jnp.nan)

    with pytest.raises(FloatingPointError, match="at step 3.*Last good checkpoint: step 2"):
        train(model, _data(), config=cfg, checkpoint_dir=tmp_path, callbacks=[poison_after_step_2],
              show_progress=False)
    checkpointer = Checkpointer(tmp_path)
    assert checkpointer.all_steps() == [2]
    fresh = _model()
    step, position, _ = checkpointer.restore(model=fresh, optimizer=make_optimizer(fresh, cfg))
    assert (step, position) == (2, 2)
    assert all(np.isfinite(v).all() for v in _params(fresh).values())


class Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    cfg = dataclasses.replace(CFG, checkpoint_every=2)
    data = _data()
    reference_model = _model()
    reference = train(reference_model, data, config=cfg, show_progress=False)

    def kill_after_step_3(step, metrics):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(_model(), data, config=cfg, checkpoint_dir=tmp_path, callbacks=[kill_after_step_3],
              show_progress=False)
    assert Checkpointer(tmp_path).all_steps() == [2]
    resumed_model = _model()  # a fresh process would rebuild the model from scratch
    resumed = train(resumed_model, data, config=cfg, checkpoint_dir=tmp_path, show_progress=False)
    assert sorted(resumed.train_losses) == [3, 4, 5, 6]  # restarted after the step-2 checkpoint
    for step in (3, 4, 5, 6):
        assert resumed.train_losses[step] == reference.train_losses[step]
    expected = _params(reference_model)
    for path, value in _params(resumed_model).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=str(path))
    assert Checkpointer(tmp_path).latest_step() == 6


def test_bfloat16_compute_keeps_float32_masters_and_tracks_float32_loss():
    bf16 = dataclasses.replace(CFG, compute_dtype="bfloat16")
    f32 = CFG  # the same optimizer as the other tests' runs: reuses their compiled step
    model = _model()
    low = train(model, _data(), config=bf16, show_progress=False)
    high = train(_model(), _data(), config=f32, show_progress=False)
    assert all(v.dtype == np.float32 for v in _params(model).values())
    # bf16 has an 8-bit mantissa: relative error ~ 2^-8 per op, a few 1e-2 on a loss of ~5
    np.testing.assert_allclose(low.train_losses[1], high.train_losses[1], rtol=3e-2)


def test_kl_to_teacher_pulls_the_label_distribution_to_the_teacher():
    labels = [5, 9]
    teacher = [[0.9, 0.1], [0.2, 0.8]]
    rows = [{"prompt": f"q{i}", "completion": "a", "teacher_probs": teacher[i % 2]} for i in range(8)]
    data = _data(rows, add_eos=False, label_ids=labels)
    cfg = dataclasses.replace(CFG, total_steps=20, learning_rate=2e-2)
    model = _model()
    result = train(model, data, config=cfg, loss_fn=KLToTeacher(), show_progress=False)
    assert result.train_losses[20] < 0.1 * result.train_losses[1]
    batch = data.collate(range(8))
    logits = _logits(model, batch)[:, -2][:, labels]
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, np.array(teacher * 4), atol=0.05)


def test_callbacks_get_the_rate_each_update_used_and_the_real_token_count():
    """`lr` against the warmup-cosine closed form at the update count before each step (step 1 of a
    warmup from 0 moves no weight), `tokens` against the rows' own lengths (padding left out)."""
    cfg = dataclasses.replace(CFG, warmup_steps=2, end_lr_ratio=0.1)
    model, seen, snapshots = _model(), {}, {0: _params(_model())}

    def record(step, metrics):
        seen[step] = dict(metrics)
        snapshots[step] = _params(model)

    train(model, _data(), config=cfg, callbacks=[record], show_progress=False)
    peak, end, warm, total = cfg.learning_rate, cfg.learning_rate * 0.1, 2, cfg.total_steps
    for step in range(1, total + 1):
        count = step - 1  # updates before this one
        expected = (peak * count / warm if count < warm else
                    end + (peak - end) * 0.5 * (1 + np.cos(np.pi * (count - warm) / (total - warm))))
        np.testing.assert_allclose(seen[step]["lr"], expected, rtol=1e-6, atol=1e-12, err_msg=str(step))
    for path, value in snapshots[1].items():  # rate 0: the first update changed nothing
        np.testing.assert_array_equal(value, snapshots[0][path], err_msg=str(path))
    assert any(not np.array_equal(v, snapshots[1][p]) for p, v in snapshots[2].items())
    tokenizer = CharTokenizer()
    lengths = {1 + len(tokenizer.encode(r["prompt"])) + len(tokenizer.encode(r["completion"])) + 1 for r in ROWS}
    [length] = lengths  # every row has the same length: any batch of 8 rows has 8 x length tokens
    assert [m["tokens"] for m in seen.values()] == [cfg.batch_size * length] * total
    assert all(m["tokens"] < cfg.batch_size * cfg.max_len for m in seen.values())  # padding not counted
