"""The binary weak-to-strong loss strategies on the classification batch layout: hand values from
numpy, limits, the rolling-buffer threshold, one compile over steps, training through `train`, and
exact resume of a run whose loss carries state.

The model is a tiny `Classifier` (its `unembed` gives `B x T x 2` logits) and the data a
`ClassificationDataset` of a separable task with soft labels."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.lm.test_train_data import CharTokenizer
from w2s_jax.models import Classifier, ModelConfig, Transformer
from w2s_jax.train import (
    BINARY_LOSSES,
    AuxConfidence,
    ClassificationDataset,
    EntropyRegularised,
    KLLoss,
    KLToTeacher,
    LossState,
    PerBatch,
    ProductLoss,
    RollingBuffer,
    SoftCrossEntropy,
    StatefulLoss,
    TrainConfig,
    THRESHOLDS,
    WindowLoss,
    binary_loss,
    make_optimizer,
    make_train_step,
    train,
)
from w2s_jax.train.binary_losses import initial_loss_state

MODEL = ModelConfig.tiny(num_layers=1)  # D=32, V=128
CFG = dataclasses.replace(TrainConfig.tiny(), max_len=6, total_steps=6, batch_size=8, learning_rate=3e-2)


def _rows(n=16, seed=0):
    """A separable task: the label is the text's first character (y/n), read at the last token ".";
    soft labels, as a weak supervisor's."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        middle = "".join(rng.choice(list("abcdefgh"), size=rng.integers(1, 4)))
        rows.append({"text": "ny"[i % 2] + middle + ".", "soft_label": float(rng.uniform(0.6, 0.95) if i % 2
                                                                             else rng.uniform(0.05, 0.4))})
    return rows


def BinaryRows(n=16, seed=0):  # noqa: N802 (a dataset, built like one)
    return ClassificationDataset(_rows(n, seed), CharTokenizer(), max_len=CFG.max_len)


def _model(seed=0):
    return Classifier(Transformer(MODEL, rngs=nnx.Rngs(seed)))


def _params(model):
    return {path: np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


# ---------------------------------------------------------------- hand values on one batch

B, T = 6, 4
RNG = np.random.default_rng(3)
LOGITS = RNG.normal(0, 1.5, (B, T, 2)).astype(np.float32)
SOFT = np.array([0.9, 0.2, 0.7, 0.4, 0.85, 0.5], np.float32)
REAL = np.array([True, True, True, True, True, False])  # the last row is padding


def _batch(step=0, logits=LOGITS, soft=SOFT, real=REAL):
    probs = np.zeros((len(soft), T, 2), np.float32)
    probs[real, -1, 0], probs[real, -1, 1] = 1 - soft[real], soft[real]
    mask = np.zeros((len(soft), T), bool)
    mask[:, -1] = real
    return {"teacher_probs_BxTxC": jnp.asarray(probs), "teacher_mask_BxT": jnp.asarray(mask),
            "step_B": jnp.full((len(soft),), step, jnp.int32)}


def _np_rows(logits=LOGITS, soft=SOFT, real=REAL):
    z = logits[real, -1].astype(np.float64)
    y = np.stack([1 - soft[real], soft[real]], -1).astype(np.float64)
    q = np.exp(z - z.max(-1, keepdims=True))
    return z, y, q / q.sum(-1, keepdims=True)


def _ce(t, q):
    return -(t * np.log(q)).sum(-1)


def _check(loss, expected, step=0):
    np.testing.assert_allclose(float(loss(jnp.asarray(LOGITS), _batch(step))), expected, rtol=2e-6)


def test_soft_cross_entropy_kl_product_entropy_window_hand_values():
    z, y, q = _np_rows()
    _check(SoftCrossEntropy(), _ce(y, q).mean())
    _check(KLLoss(), (y * (np.log(y) - np.log(q))).sum(-1).mean())
    t = y**2.0 * q**0.5
    _check(ProductLoss(alpha=2.0, beta=0.5), _ce(t / t.sum(-1, keepdims=True), q).mean())
    H = -(q * np.log(q)).sum(-1)
    w = 0.4 * min(1.0, 3 / (0.5 * 12))  # step 3 of 12, ramp over 6 steps to 0.4
    _check(EntropyRegularised(warmup_frac=0.5, max_weight=0.4, total_steps=12), ((1 - w) * _ce(y, q) + w * H).mean(),
           step=3)
    inside = q.max(-1) < 0.5 + 0.25
    assert 0 < inside.sum() < len(inside)  # the window keeps some rows and drops others
    _check(WindowLoss(radius=0.25), np.where(inside, _ce(y, q), 0.0).mean())


def test_soft_cross_entropy_and_kl_agree_with_the_language_model_losses():
    # KLToTeacher reads every masked position of a B x T x C batch: the same rows, another code path
    for ours, theirs in [(SoftCrossEntropy(), KLToTeacher(kind="cross_entropy")), (KLLoss(), KLToTeacher(kind="kl"))]:
        np.testing.assert_allclose(float(ours(jnp.asarray(LOGITS), _batch())),
                                   float(theirs(jnp.asarray(LOGITS), _batch())), rtol=1e-6)


@pytest.mark.parametrize("step", [0, 2, 5, 9])
def test_aux_confidence_hand_value_with_its_warmup(step):
    z, y, q = _np_rows()
    total, frac, w_max = 10, 0.5, 0.6
    w = w_max * min(1.0, step / (frac * total))
    m = z[:, 1] - z[:, 0]
    tau = np.quantile(m, 1 - y[:, 1].mean())
    h = (m > tau).astype(float)
    target = (1 - w) * y + w * np.stack([1 - h, h], -1)
    _check(AuxConfidence(warmup_frac=frac, max_weight=w_max, total_steps=total), _ce(target, q).mean(), step=step)


def test_aux_confidence_at_weight_zero_is_soft_cross_entropy():
    z, y, q = _np_rows()
    for step in (0, 7):
        _check(AuxConfidence(warmup_frac=0.2, max_weight=0.0, total_steps=10), _ce(y, q).mean(), step=step)
    _check(AuxConfidence(warmup_frac=0.3, max_weight=0.9, total_steps=10), _ce(y, q).mean(), step=0)


def test_rolling_buffer_thresholds_over_recent_margins():
    K, rng = 7, np.random.default_rng(5)
    loss = AuxConfidence(warmup_frac=0.0, max_weight=0.5, threshold=RollingBuffer(K))
    assert isinstance(loss, StatefulLoss)
    state, recent = loss.init_state(), []
    for _ in range(4):
        logits = rng.normal(0, 2, (B, T, 2)).astype(np.float32)
        soft = rng.uniform(0.05, 0.95, B).astype(np.float32)
        value, state = loss.with_state(jnp.asarray(logits), _batch(0, logits, soft), state)
        z, y, q = _np_rows(logits, soft)
        m = z[:, 1] - z[:, 0]
        recent = (recent + m.tolist())[-K:]  # EleutherAI's buffer: append, keep the last K
        tau = np.quantile(recent, 1 - y[:, 1].mean())
        h = (m > tau).astype(float)
        target = 0.5 * y + 0.5 * np.stack([1 - h, h], -1)
        np.testing.assert_allclose(float(value), _ce(target, q).mean(), rtol=2e-6)
        np.testing.assert_allclose(np.asarray(state)[-len(recent):], recent, rtol=1e-6)
    # without state (evaluation) the buffer is empty: the batch's own threshold, as PerBatch
    per_batch = AuxConfidence(warmup_frac=0.0, max_weight=0.5)
    np.testing.assert_allclose(float(loss(jnp.asarray(LOGITS), _batch())),
                               float(per_batch(jnp.asarray(LOGITS), _batch())), rtol=1e-6)
    assert initial_loss_state(per_batch) is None and initial_loss_state(SoftCrossEntropy()) is None


def test_gradients_flow_only_through_the_students_logits():
    z, y, q = _np_rows()
    loss = AuxConfidence(warmup_frac=0.0, max_weight=0.7)
    g = np.asarray(jax.grad(lambda lg: loss(lg, _batch()))(jnp.asarray(LOGITS)))
    m = z[:, 1] - z[:, 0]
    h = (m > np.quantile(m, 1 - y[:, 1].mean())).astype(float)
    target = 0.3 * y + 0.7 * np.stack([1 - h, h], -1)
    want = np.zeros_like(g)
    want[REAL, -1] = (q - target) / REAL.sum()  # the mixed target is constant; only position T-1 of real rows
    np.testing.assert_allclose(g, want, atol=1e-7)
    # the mixed and product targets are stop-gradient targets: no gradient reaches the weak labels
    for instance in (loss, ProductLoss(alpha=1.0, beta=1.0)):
        labels_grad = jax.grad(lambda p, f=instance: f(jnp.asarray(LOGITS), {**_batch(4), "teacher_probs_BxTxC": p}))(
            _batch(4)["teacher_probs_BxTxC"])
        assert not np.any(np.asarray(labels_grad)), instance


def test_the_step_enters_as_data_one_compile():
    loss = AuxConfidence(warmup_frac=0.5, max_weight=0.8, total_steps=10)
    jitted = jax.jit(loss)
    values = [float(jitted(jnp.asarray(LOGITS), _batch(step))) for step in range(8)]
    assert len(set(values[:6])) == 6 and values[5] == values[6] == values[7]  # ramps, then flat
    assert jitted._cache_size() == 1


def test_bad_settings_and_batches_are_clear_errors():
    with pytest.raises(ValueError, match="total_steps is unset"):
        AuxConfidence(warmup_frac=0.1)(jnp.asarray(LOGITS), _batch())
    with pytest.raises(KeyError, match="step_B"):
        AuxConfidence(total_steps=5)(jnp.asarray(LOGITS), {k: v for k, v in _batch().items() if k != "step_B"})
    with pytest.raises(ValueError, match="2 classes"):
        SoftCrossEntropy()(jnp.zeros((B, T, 3)), _batch())
    with pytest.raises(KeyError, match="teacher_mask_BxT"):
        SoftCrossEntropy()(jnp.asarray(LOGITS), {"teacher_probs_BxTxC": _batch()["teacher_probs_BxTxC"]})
    for bad, match in [(dict(max_weight=1.5), "max_weight"), (dict(warmup_frac=-0.1), "warmup_frac"),
                       (dict(total_steps=0), "total_steps"), (dict(threshold="batch"), "threshold")]:
        with pytest.raises(ValueError, match=match):
            AuxConfidence(**bad)
    with pytest.raises(ValueError, match="size"):
        RollingBuffer(0)
    with pytest.raises(ValueError, match="radius"):
        WindowLoss(radius=0.0)
    with pytest.raises(ValueError, match="alpha"):
        ProductLoss(alpha=-1.0)


# ---------------------------------------------------------------- through the trainer


class Counting:
    """Delegates to a loss and counts how often it is traced (the body runs once per trace)."""

    def __init__(self, loss):
        self.loss, self.traces = loss, 0

    def init_state(self):
        return initial_loss_state(self.loss)

    def with_state(self, logits, batch, state):
        self.traces += 1
        return self.loss.with_state(logits, batch, state)

    def __call__(self, logits, batch):
        self.traces += 1
        return self.loss(logits, batch)


def _every_loss(total_steps):
    losses = {name: binary_loss(name, total_steps=total_steps) for name in BINARY_LOSSES}
    losses["aux_confidence_rolling"] = binary_loss("aux_confidence", total_steps=total_steps,
                                                   threshold=THRESHOLDS["rolling_buffer"](size=12))
    return losses


def test_binary_loss_by_name():
    assert binary_loss("aux_confidence", total_steps=40, max_weight=0.75) == AuxConfidence(max_weight=0.75,
                                                                                         total_steps=40)
    assert binary_loss("product", total_steps=40, beta=0.5) == ProductLoss(beta=0.5)
    with pytest.raises(ValueError, match="unknown binary loss 'logconf'"):
        binary_loss("logconf", total_steps=40)
    with pytest.raises(ValueError, match=r"no field\(s\) \['radius'\]"):
        binary_loss("kl", total_steps=40, radius=0.1)


@pytest.mark.parametrize("name", sorted(_every_loss(1)))
def test_every_loss_trains_through_train_and_compiles_once(name):
    loss = Counting(_every_loss(CFG.total_steps)[name])
    data = BinaryRows()
    result = train(_model(), data, config=dataclasses.replace(CFG, eval_every=3), loss_fn=loss, eval_data=data,
                   show_progress=False)
    assert sorted(result.train_losses) == list(range(1, CFG.total_steps + 1))
    assert all(np.isfinite(v) for v in result.train_losses.values())
    assert sorted(result.eval_losses) == [3, 6] and all(np.isfinite(v) for v in result.eval_losses.values())
    assert loss.traces == 2  # one train-step trace for six steps, one eval-step trace for two evaluations
    assert hasattr(result.optimizer, "loss_state") == (name == "aux_confidence_rolling")


def test_the_train_step_sees_the_step_number():
    # AuxConfidence with max_weight 0 and 1 differ from step 1 on (w = 0 at step 0 for both)
    data, losses, cfg = BinaryRows(), {}, dataclasses.replace(CFG, warmup_steps=0)  # the first step updates
    for w_max in (0.0, 1.0):
        loss = AuxConfidence(warmup_frac=0.5, max_weight=w_max, total_steps=cfg.total_steps)
        losses[w_max] = train(_model(), data, config=cfg, loss_fn=loss, show_progress=False).train_losses
    assert losses[0.0][1] == losses[1.0][1]  # step 0 of training: weight 0 in both
    assert all(losses[0.0][s] != losses[1.0][s] for s in range(2, CFG.total_steps + 1))


class Killed(Exception):
    pass


def test_a_killed_run_with_a_rolling_buffer_resumes_exactly(tmp_path):
    cfg = dataclasses.replace(CFG, checkpoint_every=2)
    data = BinaryRows()
    loss = AuxConfidence(warmup_frac=0.0, max_weight=0.8, threshold=RollingBuffer(20))
    reference_model = _model()
    reference = train(reference_model, data, config=cfg, loss_fn=loss, show_progress=False)
    per_batch = train(_model(), data, config=cfg, loss_fn=dataclasses.replace(loss, threshold=PerBatch()),
                      show_progress=False)
    # the buffer mattered: from the second step on, thresholds over recent margins change the loss
    assert any(reference.train_losses[s] != per_batch.train_losses[s] for s in range(2, 7))

    def kill_after_step_3(step, metrics):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(_model(), data, config=cfg, loss_fn=loss, checkpoint_dir=tmp_path, callbacks=[kill_after_step_3],
              show_progress=False)
    resumed_model = _model()
    resumed = train(resumed_model, data, config=cfg, loss_fn=loss, checkpoint_dir=tmp_path, show_progress=False)
    assert sorted(resumed.train_losses) == [3, 4, 5, 6]  # from the step-2 checkpoint
    for step in (3, 4, 5, 6):
        assert resumed.train_losses[step] == reference.train_losses[step]
    np.testing.assert_array_equal(np.asarray(resumed.optimizer.loss_state.get_value()),
                                  np.asarray(reference.optimizer.loss_state.get_value()))
    for path, value in _params(resumed_model).items():
        np.testing.assert_array_equal(value, _params(reference_model)[path])


def test_grad_accumulation_passes_the_buffer_through_micro_batches_in_order():
    # one step, batch of 8 in 2 micro-batches: the buffer ends with both micro-batches' margins
    data = BinaryRows()
    cfg = dataclasses.replace(CFG, grad_accum_steps=2, total_steps=1, warmup_steps=0)
    loss = AuxConfidence(warmup_frac=0.0, max_weight=0.5, threshold=RollingBuffer(10))
    model = _model()
    batch = jax.tree.map(jnp.asarray, {**data.batch(0, 8), "step_B": np.zeros(8, np.int32)})
    h, _ = model.hidden(batch["tokens_BxT"], positions_BxT=batch["positions_BxT"], valid_BxT=batch["valid_BxT"])
    logits = np.asarray(model.unembed(h))
    optimizer = make_optimizer(model, cfg, loss_fn=loss)
    assert isinstance(optimizer.loss_state, LossState)
    make_train_step(loss, cfg)(model, optimizer, batch)
    state = np.asarray(optimizer.loss_state.get_value())
    np.testing.assert_array_equal(np.isnan(state), [True, True] + [False] * 8)
    np.testing.assert_allclose(state[2:], logits[:, -1, 1] - logits[:, -1, 0], rtol=1e-5, atol=1e-6)


def test_the_stateful_train_step_lowers_for_gpu():
    cfg = dataclasses.replace(CFG, total_steps=1, warmup_steps=0)
    loss = AuxConfidence(warmup_frac=0.0, max_weight=0.5, threshold=RollingBuffer(16))
    model = _model()
    optimizer = make_optimizer(model, cfg, loss_fn=loss)
    batch = jax.tree.map(jnp.asarray, {**BinaryRows().batch(0, 8), "step_B": np.zeros(8, np.int32)})
    step = make_train_step(loss, cfg, platform="gpu")
    text = step.jitted.trace(*step.arguments(model, optimizer, batch)).lower(lowering_platforms=("cuda",)).as_text()
    assert "sort" in text  # the quantile's sort is part of the program


def test_a_rolling_buffer_run_on_an_8_device_mesh_equals_the_unsharded_run():
    from w2s_jax.parallel import MeshConfig, make_mesh

    data, cfg = BinaryRows(), dataclasses.replace(CFG, total_steps=3)
    loss = AuxConfidence(warmup_frac=0.0, max_weight=0.8, threshold=RollingBuffer(20))
    plain = train(_model(), data, config=cfg, loss_fn=loss, show_progress=False)
    mesh = make_mesh(MeshConfig(data=2, fsdp=4))
    sharded = train(_model(), data, config=cfg, loss_fn=loss, mesh=mesh, show_progress=False)
    np.testing.assert_allclose([sharded.train_losses[s] for s in (1, 2, 3)],
                               [plain.train_losses[s] for s in (1, 2, 3)], atol=1e-5, rtol=0)
    buffer = sharded.optimizer.loss_state.get_value()
    assert buffer.sharding.is_fully_replicated
    np.testing.assert_allclose(np.asarray(buffer), np.asarray(plain.optimizer.loss_state.get_value()),
                               atol=1e-5, rtol=0)
