"""Resuming only the same run: a checkpoint directory records its run (initial weights, model config,
data, training config, loss, caller fields) and `train` refuses to restore it into any other.

Tiny random checkpoints are written with `save_pretrained` and read back with `load_pretrained`,
the path a user's run takes. Mismatched runs are refused before any step, so they share one
checkpoint directory built once per module.
"""

import dataclasses
import json
import re
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from tests.lm.test_train_data import CharTokenizer
from w2s_jax.models import ModelConfig, Transformer, load_pretrained, save_pretrained
from w2s_jax.parallel import MeshConfig, ShardingRules, make_mesh
from w2s_jax.train import (
    CheckpointMismatchError,
    Checkpointer,
    KLToTeacher,
    SFTDataset,
    TrainConfig,
    train,
    weights_fingerprint,
)
from w2s_jax.train.run_identity import IDENTITY_FILE, claim_directory

MODEL = ModelConfig.tiny(num_layers=1)  # D=32, V=128
ROWS = [{"prompt": f"q{i}", "completion": "ab"[i % 2] + "cd"[i // 4]} for i in range(8)]
CFG = dataclasses.replace(TrainConfig.tiny(), max_len=8, total_steps=6, learning_rate=1e-2, checkpoint_every=2)


def _data(rows=ROWS, **kw):
    return SFTDataset(rows, CharTokenizer(), max_len=CFG.max_len, **kw)


def _params(model):
    return {path: np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny checkpoints of the same shape (seeds 0 and 1) on disk."""
    root = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (0, 1):
        paths.append(save_pretrained(Transformer(MODEL, rngs=nnx.Rngs(seed)), MODEL, root / f"model-{seed}"))
    return paths


@pytest.fixture(scope="module")
def run_a(checkpoints, tmp_path_factory):
    """A complete run of checkpoint A with CFG on ROWS, identified as base_checkpoint='A'."""
    directory = tmp_path_factory.mktemp("run-a")
    model, _ = load_pretrained(checkpoints[0])
    train(model, _data(), config=CFG, checkpoint_dir=directory, show_progress=False,
          identity={"base_checkpoint": "A"})
    return directory


def _refused(run_dir, model_path, *, config=CFG, data=None, loss_fn=None, identity=None):
    """Train on `run_dir` expecting a refusal; returns its message. The model is left untouched."""
    model, _ = load_pretrained(model_path, layout="stacked")  # training's layout: `train` converts nothing
    before = _params(model)
    with pytest.raises(CheckpointMismatchError) as refusal:
        train(model, _data() if data is None else data, config=config, loss_fn=loss_fn, checkpoint_dir=run_dir,
              show_progress=False, identity={"base_checkpoint": "A"} if identity is None else identity)
    after = _params(model)
    assert set(after) == set(before)  # no LoRA added, nothing restored
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value)
    message = str(refusal.value)
    assert f"Delete {run_dir}" in message and "another checkpoint_dir" in message, message
    return message


def test_another_model_of_the_same_shape_is_refused_naming_the_weights(run_a, checkpoints):
    message = _refused(run_a, checkpoints[1], identity={"base_checkpoint": "B"})
    assert "base model weights differ" in message, message
    assert "identity: base_checkpoint \"A\" (checkpoint) != \"B\" (this run)" in message, message
    # same shape, same config, data and loss: only the weights and the caller's field are named
    assert message.count("\n  - ") == 2, message
    assert isinstance(CheckpointMismatchError("x"), ValueError)


def test_changed_training_config_is_refused_naming_the_field(run_a, checkpoints):
    message = _refused(run_a, checkpoints[0], config=dataclasses.replace(CFG, learning_rate=2e-2))
    assert "training config: learning_rate 0.01 (checkpoint) != 0.02 (this run)" in message, message
    assert "weights" not in message and "data" not in message, message


def test_changed_data_is_refused_naming_the_data(run_a, checkpoints):
    rows = [dict(row) for row in ROWS]
    rows[5]["completion"] = "zz"
    message = _refused(run_a, checkpoints[0], data=_data(rows))
    assert re.search(r"data differs \(fingerprint [0-9a-f]{12} in the checkpoint, [0-9a-f]{12} in this run\)",
                     message), message
    assert _refused(run_a, checkpoints[0], data=_data(seed=1)).count("data differs") == 1  # order only


def test_changed_loss_is_refused_naming_the_loss(run_a, checkpoints):
    message = _refused(run_a, checkpoints[0], loss_fn=KLToTeacher())
    assert "loss function:" in message and "CrossEntropyToTokens" in message and "KLToTeacher" in message


def test_checkpoints_without_an_identity_file_are_refused(run_a, checkpoints, tmp_path):
    legacy = tmp_path / "legacy"
    shutil.copytree(run_a, legacy)
    (legacy / IDENTITY_FILE).unlink()
    message = _refused(legacy, checkpoints[0])
    assert f"no {IDENTITY_FILE}" in message and "older version" in message, message
    (legacy / IDENTITY_FILE).write_text("{not json")
    assert "cannot read" in _refused(legacy, checkpoints[0])


class Killed(Exception):
    pass


def test_interrupted_run_resumes_with_one_line_to_the_same_parameters(checkpoints, tmp_path, capsys):
    data = _data()
    reference_model, _ = load_pretrained(checkpoints[0])
    train(reference_model, data, config=CFG, show_progress=False)

    def kill_after_step_3(step, metrics):
        # the directory was claimed before the first step, not at the first checkpoint
        assert json.loads((tmp_path / IDENTITY_FILE).read_text())["train_config"]["total_steps"] == 6
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        model, _ = load_pretrained(checkpoints[0])
        train(model, data, config=CFG, checkpoint_dir=tmp_path,
              callbacks=[kill_after_step_3], show_progress=False)
    assert Checkpointer(tmp_path).all_steps() == [2]
    capsys.readouterr()

    resumed_model, _ = load_pretrained(checkpoints[0])  # a new process reloads the base model
    resumed = train(resumed_model, data, config=CFG, checkpoint_dir=tmp_path, show_progress=False)
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "resuming" in line] == [
        f"resuming {tmp_path} from step 2 of 6 (4 steps left)"
    ], err
    assert sorted(resumed.train_losses) == [3, 4, 5, 6]
    expected = _params(reference_model)
    for path, value in _params(resumed_model).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=str(path))

    again_model, _ = load_pretrained(checkpoints[0])
    again = train(again_model, data, config=CFG, checkpoint_dir=tmp_path, show_progress=False)
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "resuming" in line] == [
        f"resuming {tmp_path} at step 6 of 6: already complete, 0 steps left"
    ], err
    assert again.step == 6 and again.train_losses == {}
    for path, value in _params(again_model).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=str(path))


def test_directory_without_checkpoints_is_reclaimed_by_a_new_run(tmp_path):
    # a run that died before its first checkpoint left only its identity: nothing to mix up
    claim_directory(tmp_path, {"format": "old run"}, steps=[])
    claim_directory(tmp_path, {"format": "new run"}, steps=[])
    assert json.loads((tmp_path / IDENTITY_FILE).read_text()) == {"format": "new run"}
    assert [p.name for p in tmp_path.iterdir()] == [IDENTITY_FILE]  # no temporary file left behind


def test_weights_fingerprint_is_the_same_on_any_mesh_and_tells_checkpoints_apart(checkpoints):
    # the fingerprint `train` takes, of weights in training's (stacked) layout
    plain, _ = load_pretrained(checkpoints[0], layout="stacked")
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    sharded, _ = load_pretrained(checkpoints[0], mesh=mesh, rules=ShardingRules.fsdp_tp(), layout="stacked")
    assert len(sharded.layers[0].attn.q_proj.get_value().sharding.device_set) == 8
    assert weights_fingerprint(sharded) == weights_fingerprint(plain)
    other, _ = load_pretrained(checkpoints[1], layout="stacked")
    assert weights_fingerprint(other) != weights_fingerprint(plain)
    # one sampled element (the first of every array is sampled) changes the fingerprint
    plain.final_norm.weight[...] = plain.final_norm.weight[...].at[0].add(1.0)
    assert weights_fingerprint(plain) != weights_fingerprint(sharded)
    assert jax.device_count() == 8


def test_dataset_fingerprint_covers_rows_and_settings():
    base = _data().fingerprint()
    assert _data().fingerprint() == base  # a pure function of the rows and settings
    rows = [dict(row) for row in ROWS]
    rows[7]["prompt"] += "x"
    teacher_rows = [{**row, "teacher_probs": [0.5, 0.5]} for row in ROWS]
    variants = [
        _data(rows),
        _data(seed=1),
        _data(pad_id=5),
        _data(add_eos=False),
        SFTDataset(ROWS, CharTokenizer(), max_len=CFG.max_len + 1),
        _data(teacher_rows, label_ids=[5, 9]),
        _data(teacher_rows, label_ids=[5, 10]),
    ]
    fingerprints = [d.fingerprint() for d in variants]
    assert len(set(fingerprints + [base])) == len(variants) + 1


def _directory_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_lora_checkpoints_hold_the_adapters_alone_and_resume_onto_a_fresh_base(checkpoints, run_a, tmp_path):
    import orbax.checkpoint as ocp

    lora = dataclasses.replace(CFG, lora_rank=4, lora_alpha=8.0, compute_dtype="bfloat16")
    data = _data()
    reference_model, _ = load_pretrained(checkpoints[0])
    train(reference_model, data, config=lora, show_progress=False)

    def kill_after_step_3(step, metrics):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        model, _ = load_pretrained(checkpoints[0])
        train(model, data, config=lora, checkpoint_dir=tmp_path, callbacks=[kill_after_step_3],
              show_progress=False)
    assert Checkpointer(tmp_path).all_steps() == [2]
    saved = Checkpointer(tmp_path).manager.restore(2, args=ocp.args.Composite(arrays=ocp.args.StandardRestore()))
    model_arrays = jax.tree_util.tree_flatten_with_path(saved["arrays"]["model"])[0]
    names = {str(path[-1].key) for path, _ in model_arrays}
    assert names == {"lora_a", "lora_b"}, names  # q_proj and v_proj adapters, no base weight
    assert len(model_arrays) == 4
    # the same model's full fine-tuning checkpoint holds the base (weights and two moments)
    full_bytes = _directory_bytes(run_a / str(Checkpointer(run_a).latest_step()))
    assert _directory_bytes(tmp_path / "2") < full_bytes / 4

    resumed_model, _ = load_pretrained(checkpoints[0])  # a new process reloads the float32 base
    resumed = train(resumed_model, data, config=lora, checkpoint_dir=tmp_path, show_progress=False)
    assert sorted(resumed.train_losses) == [3, 4, 5, 6]
    expected = _params(reference_model)
    got = _params(resumed_model)
    assert set(got) == set(expected)
    assert {v.dtype for v in got.values()} == {np.dtype("float32"), np.dtype(jax.numpy.bfloat16)}  # adapters, base
    for path, value in got.items():
        np.testing.assert_array_equal(value, expected[path], err_msg=str(path))
