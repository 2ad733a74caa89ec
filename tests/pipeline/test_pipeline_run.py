"""`w2s run` end to end on tiny random checkpoints: the run directory, the report, resume after a
kill inside a stage (nothing recomputed, nothing lost, same results), a changed setting
recomputing exactly the stages after it, and up-front validation errors through the CLI.

The task here is a small test task (``tests/pipeline/tiny_run.py``) whose metric is word overlap with the gold
answer, so random models get varied, non-trivial per-item scores; the shipped tasks have their
own tests.
"""

import json

import pytest

from tests.pipeline.tiny_run import OverlapTask, _run, make_world
from w2s_jax.cli import main
from w2s_jax.methods.icl_refine import ICLRefine
from w2s_jax.pipeline import stage_directories
from w2s_jax.pipeline import stage as stage_module

pytest.importorskip("torch", reason="building the tiny checkpoints needs torch")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("pipeline"))


def stage_dirs(run_dir, prefix):
    """The store directories of the run's stages whose names start with ``prefix``."""
    return [d for name, d in stage_directories(run_dir).items() if name.startswith(prefix)]


def _same(a, b):
    """Equal as JSON (NaN, which a PGR without a significant gap is, equals NaN here), the links to
    training curves (paths in each run's own store) aside."""
    def numbers(rows):
        return [{k: v for k, v in row.items() if k != "training"} for row in rows]

    return json.dumps(numbers(a), sort_keys=True) == json.dumps(numbers(b), sort_keys=True)


def test_run_writes_report_and_a_rerun_recomputes_nothing(world, tmp_path, monkeypatch):
    root, experiment = world
    out = tmp_path / "run"
    assert main(["run", str(experiment), "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in results["rows"]]
    assert names[0].startswith("weak/w0-")
    assert {"zero-shot", "student/gold"} <= set(names)
    assert any(n.startswith("student/naive/") for n in names)
    assert any(n.startswith("student/icl-refine/") for n in names)
    for row in results["rows"]:
        assert row["overlap"]["n"] == 6
    method_rows = [r for r in results["rows"] if r["role"] == "method"]
    assert all(r["pgr"] is not None for r in method_rows)  # computed (NaN when the gap is not significant)
    assert (out / "results.md").read_text().startswith("# tiny")
    assert (out / "figures" / "scores.png").stat().st_size > 0
    assert (out / "figures" / "weak_vs_student.png").stat().st_size > 0
    labels = stage_dirs(out, "labels/icl-refine")
    assert len(labels) == 1
    rows = [json.loads(line) for line in (labels[0] / "records.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(10))
    [finetune] = stage_dirs(out, "finetune/icl-refine")
    steps = [json.loads(line) for line in (finetune / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3]  # one line per optimizer step
    assert all({"loss", "grad_norm", "lr"} <= set(s) and s["loss"] > 0 for s in steps)
    assert steps[0]["lr"] == pytest.approx(0.0) and steps[1]["lr"] == pytest.approx(0.01)  # warmup 1 step
    assert (finetune / "loss.png").stat().st_size > 1000
    assert str(finetune / "loss.png") in (out / "results.md").read_text()

    (out / "results.md").unlink()
    assert main(["report", str(out), "--no-figures"]) == 0  # rebuilt from the run directory alone
    assert (out / "results.md").read_text().startswith("# tiny")
    assert main(["report", str(tmp_path)]) == 2  # not a run directory: one line, exit 2

    def no_model(*args, **kwargs):
        raise AssertionError("a finished stage loaded a model")

    monkeypatch.setattr("w2s_jax.pipeline.models.load_model", no_model)
    monkeypatch.setattr("w2s_jax.pipeline.stages_student.load_model", no_model)
    again, lines = _run(experiment, out, figures=False)
    assert all("(cached)" in line for line in lines if line.startswith("["))
    assert _same(again["rows"], json.loads((out / "results.json").read_text())["rows"])
    # batches in flight never change a result, so they are no stage's key either
    _, lines = _run(experiment, out, figures=False, overrides=["models.streams=1", "models.batch_size=2"])
    assert all("(cached)" in line for line in lines if line.startswith("["))


def test_kill_inside_a_stage_resumes_without_recomputing(world, tmp_path, monkeypatch):
    root, experiment = world
    reference, _ = _run(experiment, tmp_path / "reference", store=tmp_path / "reference-store", figures=False)

    calls = []
    original = ICLRefine.label

    def dying_label(self, ctx, units):
        calls.append([p for unit in units for p in unit])
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while labelling the second chunk
        return original(self, ctx, units)

    monkeypatch.setattr(ICLRefine, "label", dying_label)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        _run(experiment, out, figures=False)
    first_chunk = set(calls[0])
    calls.clear()
    monkeypatch.setattr(ICLRefine, "label", lambda self, ctx, units: (calls.append(
        [p for unit in units for p in unit]), original(self, ctx, units))[1])
    resumed, lines = _run(experiment, out, figures=False)
    done_again = {p for chunk in calls for p in chunk}
    assert done_again and not (done_again & first_chunk)  # the finished chunk was not relabelled
    assert done_again | first_chunk == set(range(10))
    assert any("weak-labels" in line and "(cached)" in line for line in lines)
    assert _same(resumed["rows"], reference["rows"])


def test_two_experiments_sharing_model_data_and_test_split_predict_zero_shot_once(world, tmp_path):
    """Another experiment (another name, other methods, its own run directory) with the same
    strong model, data and test split finds zero-shot in the shared store."""
    root, experiment = world
    first, second = [], []
    _run(experiment, tmp_path / "a", methods=["zero-shot"], figures=False, executed=first)
    other = tmp_path / "other.toml"
    other.write_text(experiment.read_text().replace('name = "tiny"', 'name = "other"'))
    results, lines = _run(other, tmp_path / "b", methods=["zero-shot", "gold"], figures=False, executed=second)
    assert [s.name for s in first].count("predict/zero-shot") == 1
    assert "predict/zero-shot" not in [s.name for s in second] and "finetune/gold" in [s.name for s in second]
    assert any(line.startswith("[done] predict/zero-shot") for line in lines)
    assert {r["name"] for r in results["rows"]} >= {"zero-shot", "student/gold"}


def test_changed_setting_recomputes_exactly_the_stages_after_it(world, tmp_path):
    root, experiment = world
    out = tmp_path / "run"
    _run(experiment, out, figures=False)
    _, lines = _run(experiment, out, figures=False, overrides=["methods.icl-refine.batch=4"])
    ran = {line.split()[1].rstrip(":") for line in lines if line.startswith("[ran]")}
    cached = {line.split()[1].rstrip(":") for line in lines if line.startswith("[done]")}
    assert ran and all("icl-refine" in name for name in ran)
    assert {n for n in ran if n.startswith("labels/")} and {n for n in ran if n.startswith("score/")}
    assert any(n.startswith("weak-labels/") for n in cached)
    assert any(n.startswith("labels/naive/") for n in cached)
    assert "score/zero-shot" in cached


def _cli_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_validation_errors_are_one_line_before_any_work(world, tmp_path, capsys):
    root, experiment = world
    text = experiment.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[train]", "[train]\nlearnign_rate = 0.1"))
    assert "did you mean 'learning_rate'" in _cli_error(capsys, ["run", str(bad)])
    bad.write_text(text.replace("train.jsonl", "nope.jsonl"))
    assert "nope.jsonl" in _cli_error(capsys, ["run", str(bad)])
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "the cat"}\n{"text": "no question here"}\n')
    bad.write_text(text.replace(str(root / "train.jsonl"), str(rows)))
    err = _cli_error(capsys, ["run", str(bad), "--out", str(tmp_path / "x")])
    assert "row 1" in err and "'question'" in err and "rows.jsonl" in err
    bad.write_text(text.replace(str(root / "test.jsonl"), str(root / "train.jsonl")))
    assert "overlaps training" in _cli_error(capsys, ["run", str(bad), "--out", str(tmp_path / "y")])
    bad.write_text(text.replace('strong = "', 'strong = "/no/such/model'))
    assert "models.strong" in _cli_error(capsys, ["run", str(bad)])
    assert not (tmp_path / "x").exists() and not (tmp_path / "store").exists()
    assert stage_module.MANIFEST == "manifest.json"


def test_w2s_list_names_methods_and_tasks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("icl-refine", "naive", "gold", "zero-shot", "test-overlap"):
        assert name in out


def test_weak_labels_from_a_file(world, tmp_path, capsys):
    """A supervisor given as a label file: its answers are the weak labels and its test score."""
    root, experiment = world
    train = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()]
    labels = [{"split": "train", "index": i, "answer": r["answer"]} for i, r in enumerate(train)]
    labels += [{"split": "test", "index": i, "answer": r["answer"] if i % 2 else "no"} for i, r in enumerate(test)]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels))
    text = experiment.read_text().replace("weak = [", f'weak_label_files = ["{tmp_path / "labels.jsonl"}"]\nweak = [')
    text = text.replace(text[text.index("weak = ["):text.index("]", text.index("weak = [")) + 1], "weak = []")
    path = tmp_path / "file.toml"
    path.write_text(text)
    results, _ = _run(path, tmp_path / "run", methods=["naive"], figures=False)
    rows = {r["name"]: r for r in results["rows"]}
    weak = rows["weak/w0-labels"]  # the file's name without its suffix
    given = {r["index"]: r["answer"] for r in labels if r["split"] == "test"}
    scores = OverlapTask().metric(*zip(*[(OverlapTask().example(r, i, "t"), given[i]) for i, r in enumerate(test)]))
    assert weak["overlap"]["mean"] == pytest.approx(sum(s["overlap"] for s in scores) / len(test), abs=1e-12)
    assert weak["overlap"]["mean"] >= 0.5  # the odd rows are exact
    [naive] = stage_dirs(tmp_path / "run", "labels/naive")
    completions = [json.loads(line)["completion"] for line in (naive / "records.jsonl").read_text().splitlines()]
    assert completions == [" " + r["answer"] for r in train]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels[:-1]))
    err = _cli_error(capsys, ["run", str(path), "--out", str(tmp_path / "other")])
    assert "no test label for row(s) [5]" in err and "weak_label_files[0]" in err


def test_a_kill_in_any_stage_loses_nothing_and_recomputes_nothing(world, tmp_path, monkeypatch, capfd):
    """Killed in turn inside weak-labels, labels, fine-tuning, predict and score (each after its
    first chunk or step), then resumed: every unit is processed exactly once in all, the trainer
    resumes from its checkpoint, and the report equals an uninterrupted run's."""
    import w2s_jax.train as train_module
    from w2s_jax.pipeline.stages_labels import Labels, WeakLabels
    from w2s_jax.pipeline.stages_student import Predict, Score

    root, experiment = world
    kw = dict(methods=["naive"], overrides=["train.checkpoint_every=1"], figures=False)
    reference, _ = _run(experiment, tmp_path / "reference", store=tmp_path / "reference-store", **kw)
    processed: dict[str, list] = {}
    for cls in (WeakLabels, Labels, Predict, Score):
        original = cls.process

        def counted(self, res, units, _original=original):
            result = _original(self, res, units)
            processed.setdefault(self.name, []).extend(map(str, units))
            return result

        monkeypatch.setattr(cls, "process", counted)

    def die_on_second_call(cls):
        original, calls = cls.process, []

        def dying(self, res, units):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return original(self, res, units)

        monkeypatch.setattr(cls, "process", dying)
        return lambda: monkeypatch.setattr(cls, "process", original)

    out = tmp_path / "killed"
    for cls in (WeakLabels, Labels, Predict, Score):
        restore = die_on_second_call(cls)
        with pytest.raises(KeyboardInterrupt):
            _run(experiment, out, **kw)
        restore()
        if cls is Labels:  # next: a kill inside fine-tuning, after its second optimizer step
            original_train = train_module.train

            def dying_train(*args, **kwargs):
                def stop(step, metrics):
                    if step == 2:
                        raise KeyboardInterrupt

                kwargs["callbacks"] = (*kwargs.get("callbacks", ()), stop)
                return original_train(*args, **kwargs)

            monkeypatch.setattr(train_module, "train", dying_train)
            with pytest.raises(KeyboardInterrupt):
                _run(experiment, out, **kw)
            monkeypatch.setattr(train_module, "train", original_train)
    resumed, _ = _run(experiment, out, **kw)
    assert "from step 2 of 3" in capfd.readouterr().err  # the student resumed from its checkpoint
    assert _same(resumed["rows"], reference["rows"])
    reference_counts = {name: len(units) for name, units in processed.items()}
    assert all(len(set(units)) == len(units) for units in processed.values()), reference_counts
    assert {n.split("/")[0] for n in processed} == {"weak-labels", "labels", "predict", "score"}


def test_sharded_run_equals_one_device(world, tmp_path):
    """`models.mesh = {fsdp = -1}` on the 8 test devices: labelling, fine-tuning and prediction
    sharded give the same weak labels, training labels and predictions as one device."""
    root, experiment = world
    base = ["models.batch_size=8", "train.batch_size=8"]
    kw = dict(methods=["zero-shot", "naive"], figures=False)
    _run(experiment, tmp_path / "one", store=tmp_path / "store-one", overrides=base, **kw)
    _, lines = _run(experiment, tmp_path / "mesh", store=tmp_path / "store-mesh",
                    overrides=base + ["models.mesh={fsdp = -1}"], **kw)
    assert "(cached)" not in "".join(lines)

    def records(run_dir, prefix):
        [stage] = stage_dirs(run_dir, prefix)
        return [json.loads(line) for line in (stage / "records.jsonl").read_text().splitlines()]

    for prefix in ("weak-labels", "labels/naive", "predict/zero-shot", "predict/student/naive"):
        assert records(tmp_path / "one", prefix) == records(tmp_path / "mesh", prefix), prefix
