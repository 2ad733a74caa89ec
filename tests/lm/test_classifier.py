"""The sequence classifier: its logits against transformers' `<Family>ForSequenceClassification`, its
head saved and reloaded, and training through the unchanged `train` (full, LoRA, bfloat16 with
remat, on a mesh, resumed), down to the step an accelerator would run, lowered for `cuda`.

HF checkpoints are tiny random ones written to a temporary directory and read back with
`load_classifier` (through `load_pretrained`), the path a user's checkpoint takes.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.lm.hf_fixtures import left_padded_batch, make_hf_checkpoint
from tests.lm.test_train_data import CharTokenizer
from w2s_jax.models import Classifier, ModelConfig, Transformer, load_classifier, save_classifier, set_backend
from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh
from w2s_jax.train import (
    Checkpointer,
    CheckpointMismatchError,
    ClassificationDataset,
    KLToTeacher,
    LoRAWeight,
    TrainConfig,
    make_optimizer,
    make_train_step,
    merge_lora,
    train,
    trainable_filter,
)
from w2s_jax.train.compute import store_frozen_in

MODEL = ModelConfig.tiny(num_layers=1)  # D=32, V=128
LOSS = KLToTeacher(kind="cross_entropy")  # against a soft label: the soft-label cross-entropy
CFG = dataclasses.replace(TrainConfig.tiny(), max_len=8, batch_size=8, total_steps=30, learning_rate=1e-2)
LORA = dataclasses.replace(CFG, lora_rank=4, lora_alpha=8.0)


def _rows(n=32, seed=0):
    """A separable task the backbone must carry: the label is the text's FIRST character (y/n); the
    last token, where the head reads, is always "."."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        middle = "".join(rng.choice(list("abcdefgh"), size=rng.integers(1, 6)))
        rows.append({"text": "ny"[i % 2] + middle + ".", "soft_label": float(i % 2)})
    return rows


def _data(rows=None, **kw):
    return ClassificationDataset(_rows() if rows is None else rows, CharTokenizer(), max_len=CFG.max_len, **kw)


def _classifier(seed=0):
    return Classifier(Transformer(MODEL, rngs=nnx.Rngs(seed)), rngs=nnx.Rngs(seed))


@nnx.jit
def _forward(model, tokens_BxT, positions_BxT, valid_BxT):
    return model(tokens_BxT, positions_BxT=positions_BxT, valid_BxT=valid_BxT)


def _class_logits(model, batch):
    return np.asarray(_forward(model, batch["tokens_BxT"], batch["positions_BxT"], batch["valid_BxT"]))


def _params(model, kind=nnx.Param):
    return {path: np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(model, kind))}


# ---- the reference: transformers' sequence classifier ------------------------------------------

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
def test_logits_match_transformers_sequence_classification(family, tmp_path):
    """Left-padded rows of different lengths: ours equals `<Family>ForSequenceClassification` (its
    `score` on the last non-pad token) given the same backbone and score weights, bias 0."""
    from transformers import AutoModelForSequenceClassification

    path = make_hf_checkpoint(tmp_path, family)
    reference = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=3, dtype=torch.float32, attn_implementation="eager").eval()
    torch.manual_seed(0)
    with torch.no_grad():  # a score that makes the logits differ by O(1) across rows and classes
        reference.score.weight.copy_(torch.randn_like(reference.score.weight))
    tokens_BxT, valid_BxT, positions_BxT = left_padded_batch((0, 2, 5, 7), 10, vocab_high=40, seed=1)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(tokens_BxT),
                             attention_mask=torch.tensor(valid_BxT.astype(np.int64)),
                             position_ids=torch.tensor(positions_BxT)).logits.numpy()

    model = load_classifier(path, num_classes=3)
    np.testing.assert_array_equal(np.asarray(model.score_kernel[...]), 0.0)  # a new head starts at zero
    model.score_kernel.set_value(jnp.asarray(reference.score.weight.detach().numpy().T))
    batch = {"tokens_BxT": tokens_BxT, "valid_BxT": valid_BxT, "positions_BxT": positions_BxT}
    logits = _class_logits(model, batch)
    assert logits.dtype == np.float32 and logits.shape == expected.shape == (4, 3)
    assert np.ptp(expected) > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)

    # the head the trainer reads: every position's logits, the last one equal to the above
    h_BxTxD, _ = model.hidden(jnp.asarray(tokens_BxT), positions_BxT=jnp.asarray(positions_BxT),
                              valid_BxT=jnp.asarray(valid_BxT))
    all_logits = np.asarray(model.unembed(h_BxTxD))
    assert all_logits.shape == (4, 10, 3) and all_logits.dtype == np.float32
    np.testing.assert_allclose(all_logits[:, -1], logits, rtol=1e-6)


def test_a_saved_head_reloads_with_its_backbone(tmp_path):
    model = _classifier()
    rng = np.random.default_rng(0)
    model.score_kernel.set_value(jnp.asarray(rng.normal(size=(MODEL.hidden_size, 2)), jnp.float32))
    model.score_bias.set_value(jnp.asarray([0.5, -0.25], jnp.float32))
    out = save_classifier(model, tmp_path / "student")
    assert sorted(p.name for p in out.iterdir()) == ["classifier_head.safetensors", "config.json",
                                                     "model.safetensors"]
    batch = _data().collate(range(8))
    for layout in ("stacked", "per_layer"):
        reloaded = load_classifier(out, layout=layout)
        np.testing.assert_array_equal(_class_logits(reloaded, batch), _class_logits(model, batch))
    with pytest.raises(ValueError, match="head of 2 classes, but num_classes=3"):
        load_classifier(out, num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        Classifier(model.backbone, num_classes=1)


def test_untrained_head_predicts_uniform():
    logits = _class_logits(_classifier(), _data().collate(range(4)))
    np.testing.assert_array_equal(logits, 0.0)


# ---- training through `train` -------------------------------------------------------------------

@pytest.mark.parametrize("config", [CFG, LORA, dataclasses.replace(LORA, compute_dtype="bfloat16", remat="full"),
                                    dataclasses.replace(CFG, compute_dtype="bfloat16", remat="dots")],
                         ids=["full", "lora", "lora-bf16-remat", "full-bf16-remat"])
def test_classifier_learns_a_separable_task(config):
    """30 steps from log 2: the mean loss of the last 5 steps is below 0.1 and every training row is
    classified right (observed: full ~0.005, LoRA ~0.02; accuracy 1.0). A LoRA run trains the head
    and the adapters, never the base."""
    model, data = _classifier(), _data()
    before = _params(model)
    result = train(model, data, config=config, loss_fn=LOSS, eval_data=_data(_rows(12, seed=1)), show_progress=False)
    losses = [result.train_losses[s] for s in sorted(result.train_losses)]
    assert losses[0] == pytest.approx(np.log(2), abs=1e-6)  # the zero head's uniform prediction
    assert np.mean(losses[-5:]) < 0.1, losses
    assert result.eval_losses[config.total_steps] < 0.2, result.eval_losses  # held-out rows (observed < 0.05)
    logits = _class_logits(model, data.collate(range(len(data))))
    accuracy = np.mean((logits[:, 1] > logits[:, 0]) == (data.labels > 0.5))
    assert accuracy > 0.9, accuracy
    after = _params(model)
    assert not np.allclose(after[("score_kernel",)], 0.0)
    if config.lora_rank is None:
        return
    adapters = _params(model, nnx.LoRAParam)
    assert {path[-1] for path in adapters} == {"lora_a", "lora_b", "score_kernel", "score_bias"}
    assert any(np.abs(v).max() > 0 for path, v in adapters.items() if path[-1] == "lora_b")
    for path, value in before.items():  # the base is frozen (a bf16 run stores it in bf16)
        if path[0] == "backbone":
            base = after.get(path + ("base",), after.get(path))  # a LoRA-wrapped weight's base
            np.testing.assert_array_equal(np.asarray(base, np.float32),
                                          np.asarray(jnp.asarray(value).astype(base.dtype), np.float32))


def test_classifier_learns_with_the_auxiliary_confidence_loss_and_accumulation():
    """Burns et al.'s loss with a rolling-buffer threshold, two micro-batches per step, LoRA: the
    same task learnt (every training row right; observed: accuracy 1.0)."""
    from w2s_jax.train import AuxConfidence, RollingBuffer

    config = dataclasses.replace(LORA, grad_accum_steps=2)
    loss = AuxConfidence(warmup_frac=0.2, max_weight=0.5, threshold=RollingBuffer(16),
                         total_steps=config.total_steps)
    model, data = _classifier(), _data()
    train(model, data, config=config, loss_fn=loss, show_progress=False)
    logits = _class_logits(model, data.collate(range(len(data))))
    assert np.mean((logits[:, 1] > logits[:, 0]) == (data.labels > 0.5)) > 0.9


def test_classifier_on_a_mesh_trains_as_on_one_device():
    config = dataclasses.replace(LORA, total_steps=4)
    single, sharded = _classifier(), _classifier()
    losses = train(single, _data(), config=config, loss_fn=LOSS, show_progress=False).train_losses
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    sharded_losses = train(sharded, _data(), config=config, loss_fn=LOSS, mesh=mesh, rules=ShardingRules.fsdp_tp(),
                           show_progress=False).train_losses
    np.testing.assert_allclose([sharded_losses[s] for s in sorted(sharded_losses)],
                               [losses[s] for s in sorted(losses)], rtol=1e-5)
    assert len(sharded.score_kernel[...].sharding.device_set) == 8
    assert sharded.backend.platform == "cpu"
    np.testing.assert_allclose(np.asarray(sharded.score_kernel[...]), np.asarray(single.score_kernel[...]),
                               atol=1e-5)


class Killed(Exception):
    pass


def test_interrupted_classifier_run_resumes_to_the_same_head_and_refuses_other_labels(tmp_path):
    config = dataclasses.replace(LORA, total_steps=6, checkpoint_every=2)
    reference = _classifier()
    train(reference, _data(), config=config, loss_fn=LOSS, show_progress=False)

    def kill_after_step_3(step, metrics):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(_classifier(), _data(), config=config, loss_fn=LOSS, checkpoint_dir=tmp_path,
              callbacks=[kill_after_step_3], show_progress=False)
    assert Checkpointer(tmp_path).all_steps() == [2]
    resumed = _classifier()  # a new process rebuilds the same initial model
    result = train(resumed, _data(), config=config, loss_fn=LOSS, checkpoint_dir=tmp_path, show_progress=False)
    assert sorted(result.train_losses) == [3, 4, 5, 6]
    expected = _params(reference)
    for path, value in _params(resumed).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=str(path))

    flipped = [dict(row, soft_label=1.0 - row["soft_label"]) for row in _rows()]
    with pytest.raises(CheckpointMismatchError, match="data differs"):
        train(_classifier(), _data(flipped), config=config, loss_fn=LOSS, checkpoint_dir=tmp_path,
              show_progress=False)
    with pytest.raises(CheckpointMismatchError, match="base model weights differ"):
        train(_classifier(seed=1), _data(), config=config, loss_fn=LOSS, checkpoint_dir=tmp_path,
              show_progress=False)


def test_a_lora_trained_classifier_saves_merged_and_reloads(tmp_path):
    model, data = _classifier(), _data()
    train(model, data, config=dataclasses.replace(LORA, total_steps=4), loss_fn=LOSS, show_progress=False)
    batch = data.collate(range(8))
    trained = _class_logits(model, batch)
    # the pipeline's predictions of a trained student, adapters unmerged: what its forward pass gives
    from w2s_jax.inference import classifier_probs

    probs = classifier_probs(model, CharTokenizer(), [row["text"] for row in _rows()[:8]], batch_size=4,
                             max_len=CFG.max_len, show_progress=False)
    expected = np.exp(trained) / np.exp(trained).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert np.ptp(expected[:, 1]) > 0.01  # trained: the rows differ
    merge_lora(model)
    assert not any(isinstance(node, LoRAWeight) for _, node in nnx.iter_graph(model))
    reloaded = load_classifier(save_classifier(model, tmp_path / "student"))
    np.testing.assert_allclose(_class_logits(reloaded, batch), trained, atol=1e-5)


# ---- the step an accelerator runs ---------------------------------------------------------------

def _dot_operand_types(stablehlo: str) -> list[tuple[str, str]]:
    dots = [line for line in stablehlo.splitlines() if "stablehlo.dot_general" in line]
    types = [re.search(r": \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)", line) for line in dots]
    assert all(types), [line for line, t in zip(dots, types) if not t]
    return [t.groups() for t in types]


@pytest.fixture
def cudnn_present(monkeypatch):
    """Lowering cuDNN's fused attention asks the installed cuDNN's version; answer for one (the
    program text does not depend on it)."""
    from jax._src.cudnn import fused_attention_stablehlo

    monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 91000)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_bf16_classifier_step_lowered_for_cuda_reads_bf16_and_updates_in_place(lora, cudnn_present):
    config = dataclasses.replace(LORA if lora else CFG, compute_dtype="bfloat16")
    model = _classifier()
    set_backend(model, "cuda")
    if lora:
        from w2s_jax.train import apply_lora

        apply_lora(model, rank=4, alpha=8.0, targets=config.lora_targets, key=jax.random.key(1))
    store_frozen_in(model, trainable_filter(config), config.compute_dtype)
    optimizer = make_optimizer(model, config)
    step = make_train_step(LOSS, config, platform="gpu")
    batch = {k: jnp.asarray(v) for k, v in _data().collate(range(8)).items()}
    args = step.arguments(model, optimizer, batch)
    _, trainable, _, _, opt_state, _ = args
    assert {path[-1] for path, _ in nnx.to_flat_state(trainable)} >= {"score_kernel", "score_bias"}
    text = step.jitted.trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    operands = _dot_operand_types(text)
    # forward and backward of the layer (q, k, v, o, gate, up, down) and of the head
    assert len(operands) >= 3 * 7 + 3 and set(operands) == {("bf16", "bf16")}, sorted(set(operands))
    assert re.search(r"tensor<\d+x32xbf16>, tensor<32x2xbf16>", text)  # the head's product, in bf16
    assert "__cudnn$fmha" in text  # the GPU backend's fused attention
    # the trained weights and the optimizer state are donated: each is an output's buffer
    donated = len(jax.tree.leaves((trainable, opt_state)))
    assert len(re.findall(r"tf\.aliasing_output|jax\.buffer_donor", text)) == donated


def test_compiled_classifier_step_updates_in_place_and_returns_only_what_it_trains():
    config = dataclasses.replace(LORA, compute_dtype="bfloat16")
    model = _classifier()
    from w2s_jax.train import apply_lora

    apply_lora(model, rank=4, alpha=8.0, targets=config.lora_targets, key=jax.random.key(1))
    store_frozen_in(model, trainable_filter(config), config.compute_dtype)
    optimizer = make_optimizer(model, config)
    step = make_train_step(LOSS, config)
    args = step.arguments(model, optimizer, {k: jnp.asarray(v) for k, v in _data().collate(range(8)).items()})
    _, trainable, frozen, _, opt_state, _ = args
    nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    # by hand: q and v adapters (A: D x r, B: r x out) and the head (D x 2 + 2), float32
    D, r = 32, 4
    assert nbytes(trainable) == (D * r + r * 4 * 8 + D * r + r * 2 * 8 + D * 2 + 2) * 4
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(frozen))
    memory = step.jitted.trace(*args).lower().compile().memory_analysis()
    state = nbytes(trainable) + nbytes(opt_state)
    assert memory.alias_size_in_bytes >= state  # donated: updated in place
    outputs = len(jax.tree.leaves((trainable, opt_state))) + 2
    assert state <= memory.output_size_in_bytes <= state + 2 * 4 + 8 * outputs
