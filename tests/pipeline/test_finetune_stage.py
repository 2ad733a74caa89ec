"""The fine-tuning stage's held-out eval set and its curves: which rows are held out (the last
``data.n_eval`` by example index, never trained on), the eval loss on them against a by-hand
cross-entropy of the finished student, and ``metrics.jsonl`` logging what the trainer reports."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from tests.pipeline.tiny_run import make_world
from w2s_jax.pipeline import ExperimentError, Split, build_plan, load_experiment
from w2s_jax.pipeline.plan import validate
from w2s_jax.pipeline.run import make_resources
from w2s_jax.pipeline.stage import run_stages
from w2s_jax.pipeline.store import Store


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("finetune"))


def _gold_finetune(experiment, store, overrides=()):
    config = load_experiment(experiment, overrides=["methods.run=[\"gold\"]", *overrides])
    train, test = validate(config)
    stages, _ = build_plan(config, Split("train", tuple(train)), Split("test", tuple(test)))
    [finetune] = [s for s in stages if s.name == "finetune/gold"]
    return config, finetune, make_resources(config, Store(store), show_progress=False)


def _by_hand_loss(model, data) -> float:
    """Mean -log p(next token) over the positions whose next token is a completion token."""
    total, count = 0.0, 0.0
    for batch, _ in data.eval_batches(4):
        logits, _ = model(jnp.asarray(batch["tokens_BxT"]), positions_BxT=jnp.asarray(batch["positions_BxT"]),
                          valid_BxT=jnp.asarray(batch["valid_BxT"]))
        z = np.asarray(logits, np.float64)[:, :-1]
        logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
        target = batch["tokens_BxT"][:, 1:]
        mask = batch["completion_mask_BxT"][:, 1:]
        picked = np.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
        total -= float((picked * mask).sum())
        count += float(mask.sum())
    return total / count


def test_the_last_n_eval_rows_are_held_out_and_their_eval_loss_is_logged(world, tmp_path, monkeypatch):
    import w2s_jax.train as train_module

    root, experiment = world
    seen, rows_of = {}, {}
    original = train_module.train

    class Recorded(train_module.SFTDataset):
        def __init__(self, rows, *args, **kw):
            super().__init__(rows, *args, **kw)
            rows_of[id(self)] = list(rows)

    def spy(model, data, *, eval_data=None, **kw):
        seen["train"], seen["eval"] = data, eval_data
        return original(model, data, eval_data=eval_data, **kw)

    monkeypatch.setattr(train_module, "train", spy)
    monkeypatch.setattr(train_module, "SFTDataset", Recorded)
    config, finetune, res = _gold_finetune(experiment, tmp_path / "store", ["data.n_eval=3", "train.eval_every=2"])
    assert finetune.held_out() == {7, 8, 9}
    run_stages([finetune], res, log=lambda line: None)
    examples = finetune.train.examples
    completions = lambda data: sorted(r["completion"] for r in rows_of[id(data)])  # noqa: E731
    gold = [config.task.target(e, e.answer) for e in examples]
    assert completions(seen["train"]) == sorted(gold[:7])  # trained on rows 0..6 only
    assert completions(seen["eval"]) == sorted(gold[7:])

    directory = res.store.directory(finetune)
    lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    # every eval_every steps (2) from the callback, and the last step's from the final evaluation
    assert [("eval_loss" in line) for line in lines] == [False, True, True]
    model, _ = res.memo[f"student:{finetune.key}"]
    assert lines[-1]["eval_loss"] == pytest.approx(_by_hand_loss(model, seen["eval"]), rel=1e-5)
    for line in lines:  # what train reported, and the real tokens over the step's time
        assert {"loss", "grad_norm", "lr", "tokens"} <= set(line)
        assert line["tokens"] < config.train.batch_size * config.train.max_len  # padding not counted
    assert lines[0]["lr"] == 0.0 and lines[1]["lr"] == pytest.approx(config.train.learning_rate)
    assert all(line["tokens_per_s"] == pytest.approx(line["tokens"] / line["seconds"]) for line in lines[1:])
    assert (directory / "loss.png").stat().st_size > 1000
    assert "eval loss" in finetune.manifest(res.store)["summary"] and "on 7 rows" in finetune.manifest(res.store)["summary"]


def test_n_eval_enters_the_finetune_key_only_when_set(world, tmp_path):
    root, experiment = world
    _, plain, _ = _gold_finetune(experiment, tmp_path / "store")
    _, zero, _ = _gold_finetune(experiment, tmp_path / "store", ["data.n_eval=0"])
    _, held, _ = _gold_finetune(experiment, tmp_path / "store", ["data.n_eval=2"])
    assert "n_eval" not in plain.fields() and plain.key == zero.key  # stored students stay found
    assert held.fields()["n_eval"] == 2 and held.key != plain.key
    assert held.labels.key == plain.labels.key  # the labels are the same stage either way
    with pytest.raises(ExperimentError, match="data.n_eval = 10 holds out every one of the 10 training rows"):
        _gold_finetune(experiment, tmp_path / "store", ["data.n_eval=10"])


def test_a_lora_or_bf16_student_generates_merged_in_its_compute_dtype(world, tmp_path):
    """The student that answers the test questions has its LoRA adapters folded in and its weights
    in the dtype it trained computing in; a float32 full fine-tune is left in float32, and only the
    changed students' predictions get new keys."""
    import jax
    from flax import nnx

    from w2s_jax.pipeline.stages_student import Predict, StudentAnswerer
    from w2s_jax.train import LoRAWeight

    root, experiment = world
    keys = {}
    for name, overrides, dtype in (("lora-bf16", ["train.lora_rank=2", "train.compute_dtype=\"bfloat16\""], "bfloat16"),
                                   ("full-f32", [], "float32")):
        config, finetune, res = _gold_finetune(experiment, tmp_path / name, overrides)
        run_stages([finetune], res, log=lambda line: None)
        model, _ = finetune.student(res)
        assert not any(isinstance(node, LoRAWeight) for _, node in nnx.iter_graph(model)), name
        dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
        assert dtypes == {jax.numpy.dtype(dtype)}, (name, dtypes)
        [predict] = [s for s in build_plan(config, finetune.train, Split("test", tuple(validate(config)[1])))[0]
                     if isinstance(s, Predict) and isinstance(s.answerer, StudentAnswerer)]
        keys[name] = "student_weights" in predict.fields()
    assert keys == {"lora-bf16": True, "full-f32": False}
