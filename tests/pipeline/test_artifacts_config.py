"""The run directory's building blocks (atomic files, JSONL logs surviving a kill, per-process
shares and merges) and the experiment file's checks (unknown keys, overrides, bad values)."""

import json
import os
import textwrap

import pytest

from w2s_jax.pipeline.artifacts import (
    JsonlLog,
    atomic_write_json,
    content_hash,
    merge_parts,
    part_path,
    process_share,
)
from w2s_jax.pipeline.config import ExperimentError, load_experiment


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert os.listdir(tmp_path) == ["a.json"]


def test_jsonl_log_drops_a_line_cut_by_a_kill(tmp_path):
    log = JsonlLog(tmp_path / "part.jsonl")
    log.append([{"_unit": 0, "v": "a"}, {"_unit": 1, "v": "b"}])
    with open(log.path, "a") as handle:  # a kill in the middle of the next append
        handle.write('{"_unit": 2, "v": "c"')
    assert [r["_unit"] for r in log.read()] == [0, 1]
    log.append([{"_unit": 2, "v": "c"}])
    assert [r["v"] for r in log.read()] == ["a", "b", "c"]


def test_jsonl_log_names_a_corrupt_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl: line 2"):
        JsonlLog(path).read()


@pytest.mark.parametrize("num,count", [(0, 3), (5, 1), (7, 3), (64, 8), (3, 5)])
def test_process_shares_cover_every_unit_once_in_order(num, count):
    shares = [process_share(num, p, count) for p in range(count)]
    assert [u for share in shares for u in share] == list(range(num))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_merge_parts_restores_unit_order(tmp_path):
    for p, units in enumerate([[0, 1, 2], [3, 4], [5, 6]]):
        JsonlLog(part_path(tmp_path, p)).append({"_unit": u, "v": u * u} for u in reversed(units))
    merged = merge_parts([part_path(tmp_path, p) for p in range(3)])
    assert [r["_unit"] for r in merged] == list(range(7))
    assert [r["v"] for r in merged] == [u * u for u in range(7)]


def test_content_hash_ignores_key_order_but_not_values():
    assert content_hash({"a": 1, "b": (2, 3)}) == content_hash({"b": [2, 3], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})


_EXPERIMENT = """
name = "t"
[task]
name = "{task}"
[data]
train = "train.jsonl"
test = "test.jsonl"
[models]
strong = "s"
weak = "w"
[methods]
run = ["naive", "icl-refine"]
[methods.icl-refine]
batch = 3
[train]
total_steps = 4
warmup_steps = 1
"""


def _write(tmp_path, text, task="math"):
    path = tmp_path / "exp.toml"
    path.write_text(textwrap.dedent(text).replace("{task}", task))
    return path


def test_experiment_loads_typed_with_overrides(tmp_path):
    config = load_experiment(_write(tmp_path, _EXPERIMENT),
                             overrides=["train.learning_rate=0.5", "methods.icl-refine.shuffle_seed=7"])
    assert config.train.learning_rate == 0.5 and config.train.total_steps == 4
    assert config.models.weak == ("w",)
    assert config.models.streams is None  # the Engine's default (w2s_jax.inference.streams)
    assert load_experiment(_write(tmp_path, _EXPERIMENT), overrides=["models.streams=3"]).models.streams == 3
    assert config.method("icl-refine").options.batch == 3
    assert config.method("icl-refine").options.shuffle_seed == 7
    assert [m.name for m in load_experiment(_write(tmp_path, _EXPERIMENT), methods=["naive"]).methods] == ["naive"]


@pytest.mark.parametrize("edit,message", [
    (("[train]", "[train]\nlearnign_rate = 1.0"), r"unknown key 'learnign_rate' in \[train\] \(did you mean 'learning_rate'\?\)"),
    (("[models]", "[models]\nstorng = 1"), r"unknown key 'storng' in \[models\] \(did you mean 'strong'\?\)"),
    (('run = ["naive", "icl-refine"]', 'run = ["naive", "icl-refin"]'), r"unknown method 'icl-refin' \(did you mean 'icl-refine'\?\)"),
    (("batch = 3", "batch = 1"), r"methods\.icl-refine\.batch must be an int >= 2"),
    (("total_steps = 4", "total_steps = 0"), r"\[train\]: TrainConfig\.total_steps"),
    (("[data]", "[dta]"), r"unknown key 'dta' in the top level \(did you mean 'data'\?\)"),
    (("[models]", "[models]\nstreams = 0"), r"models\.streams must be an int >= 1, got 0"),
    (("[models]", "[models]\nstreams = 2\nmesh = {fsdp = 2}"), r"models\.streams = 2 with models\.mesh"),
])
def test_experiment_errors_name_the_file_and_key(tmp_path, edit, message):
    path = _write(tmp_path, _EXPERIMENT.replace(*edit))
    with pytest.raises(ExperimentError, match=message) as info:
        load_experiment(path)
    assert str(path) in str(info.value)


def test_unknown_task_and_bad_override(tmp_path):
    with pytest.raises(ExperimentError, match=r"\[methods\.icl-refin\] configures an unknown method \(did you mean 'icl-refine'\?\)"):
        load_experiment(_write(tmp_path, _EXPERIMENT.replace("[methods.icl-refine]", "[methods.icl-refin]")))
    with pytest.raises(ExperimentError, match="unknown task 'mth'"):
        load_experiment(_write(tmp_path, _EXPERIMENT, task="mth"))
    with pytest.raises(ExperimentError, match="expected KEY=VALUE"):
        load_experiment(_write(tmp_path, _EXPERIMENT), overrides=["train.total_steps"])
    with pytest.raises(ExperimentError, match="not found"):
        load_experiment(tmp_path / "missing.toml")


def test_context_distill_takes_icl_refines_options_said_once(tmp_path):
    """icl-refine's batch is said once; context-distill has no batch of its own to contradict it."""
    text = _EXPERIMENT.replace('run = ["naive", "icl-refine"]', 'run = ["icl-refine", "context-distill"]')
    config = load_experiment(_write(tmp_path, text))
    assert config.method("icl-refine").options.batch == 3
    with pytest.raises(ExperimentError, match=r"unknown key 'batch' in \[methods.context-distill\]"):
        load_experiment(_write(tmp_path, text + "\n[methods.context-distill]\nbatch = 3\n"))
    ok = text + "\n[methods.context-distill]\ntop_k = 4\n"
    assert load_experiment(_write(tmp_path, ok)).method("context-distill").options.top_k == 4
