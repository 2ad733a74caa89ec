"""The shared store: one writer per stage (two real processes racing on one run, a dead holder's
lock taken over), model fingerprints that see every byte, sampled labels that do not depend on
chunking or batching, options said once, and ``--dry-run`` on a half-finished run."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline.tiny_run import _run, make_world
from w2s_jax.cli import main
from w2s_jax.pipeline import Split, build_plan, load_experiment, run_stages, stage_directories
from w2s_jax.pipeline.lock import StageBusy, StageLock
from w2s_jax.pipeline.models import model_fingerprint
from w2s_jax.pipeline.run import make_resources
from w2s_jax.pipeline.plan import validate
from w2s_jax.pipeline.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("store"))


def _records(directory):
    return [json.loads(line) for line in (Path(directory) / "records.jsonl").read_text().splitlines()]


def _one(stages, prefix):
    [stage] = [s for name, s in stages.items() if name.startswith(prefix)]
    return stage


def _plan(experiment, store, overrides=()):
    config = load_experiment(experiment, overrides=list(overrides))
    train, test = validate(config)
    stages, _ = build_plan(config, Split("train", tuple(train)), Split("test", tuple(test)))
    return config, {s.name: s for s in stages}, make_resources(config, Store(store), show_progress=False)


# --- one writer per stage -------------------------------------------------------------------------


def test_two_processes_racing_on_one_run_never_write_a_stage_twice(world, tmp_path):
    """`w2s run X --out D` started twice at once: each stage is computed by one process (the other
    waits for it, then finds it done), no record is duplicated, both exit 0 with the same report."""
    root, experiment = world
    out = tmp_path / "run"
    code = ("import sys, tests.pipeline.tiny_run; from w2s_jax.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    argv = [sys.executable, "-c", code, "run", str(experiment), "--out", str(out), "--no-progress",
            "--no-figures", "--methods", "naive", "--set", "train.total_steps=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    procs = []
    for _ in range(2):
        procs.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
        time.sleep(0.3)
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    logs = "".join(o[0] for o in outputs)
    dirs = stage_directories(out)
    for name, directory in dirs.items():
        assert logs.count(f"[ran]  {name}:") == 1, (name, logs)  # computed once, by one of them
        if (directory / "records.jsonl").is_file():
            indices = [r["index"] for r in _records(directory)]
            assert len(indices) == len(set(indices)), name
            parts = [json.loads(line)["_unit"] for p in directory.glob("part-*.jsonl")
                     for line in p.read_text().splitlines()]
            assert len(parts) == len(set(parts)), name
    assert "[wait]" in logs  # the second process waited for the first at least once
    assert json.loads((out / "results.json").read_text())["rows"]


def test_a_dead_holders_lock_is_taken_over_and_a_live_one_refuses(tmp_path):
    path = tmp_path / "stage" / "lock-00000"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.parent.mkdir()
    path.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "started": "then"}))
    lines = []
    with StageLock(path, log=lines.append) as lock:  # its holder is gone: taken over at once
        assert lock.took_over_from and str(int(dead.stdout)) in lock.took_over_from
        assert json.loads(path.read_text())["pid"] == os.getpid()
        holder = subprocess.run(
            [sys.executable, "-c", "import sys; from w2s_jax.pipeline.lock import StageLock, StageBusy\n"
             "try:\n    StageLock(sys.argv[1], wait=False).__enter__()\nexcept StageBusy as e:\n"
             "    print(e); sys.exit(3)", str(path)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert holder.returncode == 3 and f"pid {os.getpid()}" in holder.stdout
        assert len(holder.stdout.strip().splitlines()) == 1
    assert path.read_text() == ""  # a clean release leaves no holder behind
    killed = subprocess.run(  # a holder killed while holding the lock (SIGKILL: no clean-up at all)
        [sys.executable, "-c", "import os, signal, sys; from w2s_jax.pipeline.lock import StageLock\n"
         "StageLock(sys.argv[1]).__enter__(); print(os.getpid(), flush=True); os.kill(os.getpid(), signal.SIGKILL)",
         str(path)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert killed.returncode == -9 and json.loads(path.read_text())["pid"] == int(killed.stdout)
    with StageLock(path, wait=False, log=lines.append) as lock:  # not left behind for ever
        assert f"pid {int(killed.stdout)}" in lock.took_over_from
    with StageLock(path, wait=False) as lock:
        assert lock.took_over_from is None
    with pytest.raises(StageBusy):
        with StageLock(path, wait=False), StageLock(path, wait=False):
            pass


# --- model identity -------------------------------------------------------------------------------


def _old_sampled_blocks(path):
    """The byte ranges the former fingerprint read: the header and 16 evenly spaced 4 KiB blocks."""
    import struct

    size = path.stat().st_size
    header = struct.unpack("<Q", path.read_bytes()[:8])[0]
    start, span = 8 + header, max(size - 8 - header - 4096, 0)
    return [(0, start)] + [(start + span * i // 15, start + span * i // 15 + 4096) for i in range(16)]


def test_fingerprint_sees_an_edit_outside_any_sampled_block_and_a_new_tokenizer(tmp_path, monkeypatch):
    from tests.lm.hf_fixtures import make_hf_checkpoint
    from w2s_jax.pipeline import models as models_module

    model = make_hf_checkpoint(tmp_path / "m", "llama", seed=0, hidden_size=64, intermediate_size=128)
    cache = tmp_path / "cache"
    first = model_fingerprint(str(model), cache)
    weights = model / "model.safetensors"
    blocks = _old_sampled_blocks(weights)
    offset = next(o for o in range(blocks[0][1], weights.stat().st_size - 4, 64)
                  if all(not (a <= o < b) and not (a <= o + 4 < b) for a, b in blocks))
    stat = weights.stat()
    with open(weights, "r+b") as handle:  # one float of one tensor, in place
        handle.seek(offset)
        value = handle.read(4)
        handle.seek(offset)
        handle.write(bytes(b ^ 0x55 for b in value))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime restored
    assert weights.stat().st_size == stat.st_size and weights.stat().st_mtime_ns == stat.st_mtime_ns
    edited = model_fingerprint(str(model), cache)
    assert edited != first

    tokenizer = json.loads((model / "tokenizer.json").read_text())
    tokenizer.setdefault("added_tokens", []).append(
        {"id": 999, "content": "<new>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True})
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    retokenized = model_fingerprint(str(model), cache)
    assert retokenized not in (first, edited)

    def no_open(*args, **kwargs):
        raise AssertionError("an unchanged file was hashed again")

    monkeypatch.setattr(models_module, "open", no_open, raising=False)
    assert model_fingerprint(str(model), cache) == retokenized  # every digest remembered


def test_a_changed_model_changes_the_key_of_every_stage_that_reads_it(world, tmp_path):
    from tests.lm.hf_fixtures import make_hf_checkpoint
    root, experiment = world
    from tests.lm.hf_fixtures import SPECIAL_TOKENS, WORDS

    strong = make_hf_checkpoint(tmp_path / "strong", "llama", seed=0, vocab_size=len(SPECIAL_TOKENS) + len(WORDS))
    text = experiment.read_text()
    old_strong = text.split('strong = "', 1)[1].split('"', 1)[0]
    (tmp_path / "x.toml").write_text(text.replace(old_strong, str(strong)))
    _, stages, _ = _plan(tmp_path / "x.toml", tmp_path / "store")
    before = {name: stage.key for name, stage in stages.items()}
    (strong / "tokenizer_config.json").write_text((strong / "tokenizer_config.json").read_text() + "\n")
    _, after, _ = _plan(tmp_path / "x.toml", tmp_path / "store")
    unaffected = ("weak-labels", "predict/weak", "score/weak", "labels/naive", "labels/gold")
    for name in before:  # every stage that reads the strong model, and only those, has a new key
        assert (before[name] != after[name].key) == (not name.startswith(unaffected)), name


# --- randomness per example ----------------------------------------------------------------------


def test_a_sampled_label_is_the_same_whatever_chunk_size_and_batch_size(world, tmp_path):
    root, experiment = world
    sampled = ["generation.temperature=1.0", "generation.max_new_tokens=4"]
    results = []
    for i, extra in enumerate([["chunk_size=64", "models.batch_size=8"], ["chunk_size=1", "models.batch_size=1"],
                               ["chunk_size=3", "models.batch_size=2"]]):
        config, stages, res = _plan(experiment, tmp_path / f"store{i}", sampled + extra)
        wanted = [_one(stages, "weak-labels/"), _one(stages, "labels/icl-refine/")]
        run_stages(wanted, res, log=lambda line: None)
        results.append([(_records(res.store.directory(s)), s.key) for s in wanted])
    assert results[0] == results[1] == results[2]  # same records, same keys
    answers = [r["answer"] for r in results[0][0][0]]
    assert len(set(answers)) > 1  # really sampled: the rows differ


def test_fresh_demonstrations_are_the_same_whatever_chunk_size_and_batch_size(world, tmp_path):
    """icl-refine with draw = "fresh" and sampled answers: the demonstrations and labels are the
    same whatever chunk_size and batch size; each query has batch - 1 of its own, never itself."""
    root, experiment = world
    fresh = ["generation.temperature=1.0", "generation.max_new_tokens=4", "methods.icl-refine.draw=\"fresh\""]
    results = []
    for i, extra in enumerate([["chunk_size=64", "models.batch_size=8"], ["chunk_size=1", "models.batch_size=1"],
                               ["chunk_size=3", "models.batch_size=2"]]):
        config, stages, res = _plan(experiment, tmp_path / f"store{i}", fresh + extra)
        wanted = [_one(stages, "weak-labels/"), _one(stages, "labels/icl-refine/")]
        run_stages(wanted, res, log=lambda line: None)
        results.append([(_records(res.store.directory(s)), s.key) for s in wanted])
    assert results[0] == results[1] == results[2]  # same records, same keys
    rows = results[0][1][0]
    assert sorted(r["index"] for r in rows) == list(range(10))
    assert all(len(set(r["demos"])) == 2 and r["index"] not in r["demos"] for r in rows)  # batch = 3
    assert len({tuple(sorted(r["demos"])) for r in rows}) > 3  # drawn per row, not shared by batches


def test_draw_at_its_default_keeps_every_stage_key(world, tmp_path):
    """`draw` was added to icl-refine's options after its stage keys existed: at "batch" it enters
    no key (stored labels stay valid); "fresh" changes icl-refine's key and what reads it only."""
    from w2s_jax.pipeline.refs import canonical

    root, experiment = world
    run = ["methods.run=[\"naive\", \"icl-refine\", \"context-distill\"]"]
    keys = {}
    for draw in (None, "batch", "fresh"):
        extra = [] if draw is None else [f"methods.icl-refine.draw=\"{draw}\""]
        _config, stages, _res = _plan(experiment, tmp_path / "store", run + extra)
        keys[draw] = {name: stage.key for name, stage in stages.items()}
        icl = _one(stages, "labels/icl-refine/").method.options
        assert ("draw" in canonical(icl)) == (draw == "fresh")
    assert keys[None] == keys["batch"]
    changed = {name for name in keys[None] if keys[None][name] != keys["fresh"][name]}
    assert changed and all(("icl-refine" in name or "context-distill" in name) for name in changed), changed


# --- options said once --------------------------------------------------------------------------


def test_icl_refine_batch_said_once_runs_context_distill_with_it(world, tmp_path, monkeypatch):
    """The experiment sets `[methods.icl-refine] batch = 3` and nothing for context-distill: its
    teacher reads each of icl-refine's prompts, with the demonstrations of batches of 3."""
    from w2s_jax.inference.engine import Engine

    root, experiment = world
    assert "[methods.icl-refine]\nbatch = 3" in experiment.read_text().replace("        ", "")
    seen = []
    original = Engine.next_token_topk
    monkeypatch.setattr(Engine, "next_token_topk", lambda self, prompts, completions, k: (
        seen.extend(prompts), original(self, prompts, completions, k))[1])
    config, stages, res = _plan(experiment, tmp_path / "store", ["methods.run=[\"icl-refine\", \"context-distill\"]"])
    distill, icl = _one(stages, "labels/context-distill/"), _one(stages, "labels/icl-refine/")
    run_stages([distill], res, log=lambda line: None)
    icl_rows = {r["index"]: r for r in _records(res.store.directory(icl))}
    # batches of 3, the last one of 4 (a lone 10th question joins the batch before it)
    assert [len(icl_rows[i]["demos"]) for i in range(10)] == [2] * 6 + [3] * 4
    demonstrations = sorted(p.system.count("Question:") for p in seen)
    assert demonstrations == sorted(len(icl_rows[i]["demos"]) for i in icl_rows if icl_rows[i]["completion"].strip())
    assert len(seen) == len(_records(res.store.directory(distill)))
    assert {r["index"] for r in _records(res.store.directory(distill))} <= set(icl_rows)


# --- dry run --------------------------------------------------------------------------------------


def test_dry_run_on_a_half_finished_run_lists_states_and_loads_no_model(world, tmp_path, monkeypatch, capsys):
    from w2s_jax.pipeline.stages_labels import Labels

    root, experiment = world
    out = tmp_path / "run"
    original, calls = Labels.process, []

    def dying(self, res, units):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, res, units)

    monkeypatch.setattr(Labels, "process", dying)
    with pytest.raises(KeyboardInterrupt):  # killed in the second chunk of labels/naive
        _run(experiment, out, methods=["zero-shot", "naive"], figures=False)
    monkeypatch.setattr(Labels, "process", original)

    def no_model(*args, **kwargs):
        raise AssertionError("a dry run loaded a model")

    monkeypatch.setattr("w2s_jax.pipeline.models.load_model", no_model)
    monkeypatch.setattr("w2s_jax.pipeline.stages_student.load_model", no_model)
    capsys.readouterr()
    assert main(["run", str(experiment), "--out", str(out), "--methods", "zero-shot,naive", "--dry-run"]) == 0
    text = capsys.readouterr().out
    lines = {line.split("] ", 1)[1].split(" ")[0]: line for line in text.splitlines() if line.startswith("[")}
    assert _one(lines, "weak-labels/").startswith("[done]")
    assert lines["score/zero-shot"].startswith("[done]")
    assert _one(lines, "labels/naive/").startswith("[4 of 10 units]")  # one chunk of 4 rows done
    assert _one(lines, "finetune/naive/").startswith("[to run]") and "loads" in _one(lines, "finetune/naive/")
    assert _one(lines, "score/student/naive/").startswith("[to run]")
    assert "4 of 9 stages to run" in text


def test_the_default_store_sits_beside_the_run_directory(tmp_path, monkeypatch):
    from w2s_jax.pipeline import ExperimentError, default_store, open_store

    monkeypatch.delenv("W2S_STORE", raising=False)
    assert default_store(tmp_path / "runs" / "gsm8k") == tmp_path / "runs" / "store"
    monkeypatch.setenv("W2S_STORE", str(tmp_path / "elsewhere"))
    assert default_store(tmp_path / "runs" / "gsm8k") == tmp_path / "elsewhere"
    with pytest.raises(ExperimentError, match="cannot be the store itself"):
        open_store(tmp_path / "s", tmp_path / "s")


def _row_keys(calls):
    """The key each generated row draws from, ``fold_in(key, example id)``, as bytes."""
    import jax
    import numpy as np

    return [np.asarray(jax.random.key_data(jax.random.fold_in(key, i))).tobytes()
            for key, ids in calls for i in ids]


def test_bootstrap_hops_and_inferred_sentences_draw_per_row_whatever_chunk_and_batch(world, tmp_path, monkeypatch):
    """Sampled bootstrap and infer-and-respond labels are the same whatever chunk_size and batch
    size, and no two sampled rows of a stage (a hop's and the next hop's, a batch's sentence and
    its first answer) draw from the same key."""
    from w2s_jax.inference.engine import Engine

    root, experiment = world
    weak = load_experiment(experiment).models.weak[0]
    calls = []
    original = Engine.generate

    def recording(self, prompts, *, key=None, example_ids=None, **kw):
        calls.append((key, list(example_ids)))
        return original(self, prompts, key=key, example_ids=example_ids, **kw)

    monkeypatch.setattr(Engine, "generate", recording)
    sampled = ["generation.temperature=1.0", "generation.max_new_tokens=3", f"models.intermediate=[\"{weak}\"]",
               "methods.run=[\"bootstrap\", \"infer-and-respond\"]", "methods.bootstrap.batch=3",
               "methods.infer-and-respond.batch=3", "methods.infer-and-respond.max_sentence_tokens=3"]
    results = []
    for i, extra in enumerate([["chunk_size=64", "models.batch_size=8"], ["chunk_size=2", "models.batch_size=3"]]):
        config, stages, res = _plan(experiment, tmp_path / f"store{i}", sampled + extra)
        records = []
        run_stages([_one(stages, "weak-labels/")], res, log=lambda line: None)
        for prefix in ("labels/bootstrap/", "labels/infer-and-respond/"):
            stage = _one(stages, prefix)
            calls.clear()
            run_stages([stage], res, log=lambda line: None)
            stage_calls = [c for c in calls if c[0] is not None]
            keys = _row_keys(stage_calls)
            assert len(keys) == len(set(keys)), prefix  # every sampled row its own draw
            rows = _records(res.store.directory(stage))
            # bootstrap: two hops per row; infer-and-respond: a sentence per batch, then each answer
            assert len(keys) == (2 * len(rows) if prefix.startswith("labels/bootstrap")
                                 else len(stage.units(res)) + len(rows))
            records.append((rows, stage.key))
        results.append(records)
    assert results[0] == results[1]  # same records, same keys
    bootstrap_rows = results[0][0][0]
    assert len({r["completion"] for r in bootstrap_rows}) > 1  # really sampled
    assert len({r["inferred"] for r in results[0][1][0]}) > 1


def test_labels_sampled_the_old_way_are_not_reused_and_greedy_keys_stay(world, tmp_path):
    """Bootstrap and infer-and-respond changed how their sampled labels draw (``Method.draws`` 2):
    a sampled stage's key carries that version, a greedy one's does not (it draws nothing)."""
    from w2s_jax.methods.base import Method

    root, experiment = world
    weak = load_experiment(experiment).models.weak[0]
    both = [f"models.intermediate=[\"{weak}\"]", "methods.run=[\"bootstrap\", \"infer-and-respond\", \"icl-refine\"]"]
    for generation, expect_draws in ((["generation.temperature=1.0"], True), ([], False)):
        _, stages, _ = _plan(experiment, tmp_path / "store", both + generation)
        for prefix, draws in (("labels/bootstrap/", 2), ("labels/infer-and-respond/", 2), ("labels/icl-refine/", 1)):
            stage = _one(stages, prefix)
            assert stage.method.draws == draws
            assert ("draws" in stage.fields()) == (expect_draws and draws > 1), (prefix, generation)
    assert Method.draws == 1
