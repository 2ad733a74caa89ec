"""`w2s run` of the shipped tiny classification experiment on tiny random local checkpoints and
fixture data: it runs end to end and writes its report; `--dry-run` lists the stages and loads no
model; a run killed inside a stage resumes without recomputing a finished stage (executions
counted) and ends with the same results as an uninterrupted run; a changed setting recomputes only
the stages that depend on it; `w2s report` rebuilds the report."""

import json

import numpy as np
import pytest

from tests.classify.tiny_world import SHIPPED, make_world, tiny_config
from w2s_jax.classify import classification_graph, run_classification
from w2s_jax.cli import main


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls-run")
    make_world(root)
    return root


def _run(config, out, store, **kw):
    lines, executed = [], []
    results = run_classification(config, run_dir=out, store=store, show_progress=False, log=lines.append,
                                 executed=executed, **kw)
    return results, lines, executed


@pytest.fixture(scope="module")
def finished(root, tmp_path_factory):
    """One uninterrupted run (one seed, to keep it small)."""
    base = tmp_path_factory.mktemp("finished")
    config = tiny_config(root, ["seeds=[0]"])
    results, lines, executed = _run(config, base / "run", base / "store", figures=True)
    return config, base, results, executed


def test_a_tiny_run_writes_every_subject_with_intervals(finished):
    config, base, results, executed = finished
    assert len(executed) == len({s.key for s in executed}) == len(classification_graph(config).stages) == 25
    [pair] = results["pairs"]
    subjects = [row["subject"] for row in pair["rows"]]
    assert subjects[:3] == ["weak", "ceiling", "zero-shot"]
    assert {"student/cross_entropy", "student/aux_confidence", "probe/knn", "student/repair-knn",
            "student/icl-refine", "student/s2s-1"} <= set(subjects)
    assert [row["labels"] for row in results["label_sets"]] == ["weak", "repair/knn", "icl-refine", "s2s-1"]
    for row in pair["rows"]:
        for metric in ("accuracy", "auc", "ece"):
            [seed] = row["seeds"][metric]
            assert 0.0 <= seed["value"] <= 1.0 and seed["lo"] <= seed["value"] <= seed["hi"], (row["subject"], metric)
        if row["subject"].startswith(("student/", "probe/")):
            assert "pgr_accuracy" in row and "agreement" in row
    from w2s_jax.classify.stages_models import Probabilities
    from w2s_jax.pipeline import Store

    store = Store(base / "store")

    halves = [s for s in executed if isinstance(s, Probabilities) and s.holdout is not None]
    assert sorted(s.holdout for s in halves) == [0, 1]
    for half in halves:  # each strong-to-strong half labels only the items its classifier never saw
        labelled = {r["index"] for r in half.records(store)}
        assert labelled == {i for i in range(16) if i % 2 == half.holdout}
        assert len(half.classifier.rows(store)) == 8
    run = base / "run"
    for name in ("results.json", "results.md", "classification.json", "stages.json", "experiment.toml",
                 "figures/pgr_heatmap_accuracy.png", "figures/pgr_lines_auc.png"):
        assert (run / name).is_file(), name
    assert (run / "experiment.toml").read_text() == SHIPPED.read_text()
    text = (run / "results.md").read_text()
    assert "| student/aux_confidence |" in text and "Training labels of half B" in text


def test_the_report_matches_a_direct_computation(finished):
    """Accuracy and AUC of a student recomputed here from its stored probabilities and the gold
    labels (numpy and scikit-learn, not the report's code)."""
    sklearn = pytest.importorskip("sklearn.metrics")
    config, base, results, _ = finished
    index = json.loads((base / "run" / "classification.json").read_text())
    items = [json.loads(line) for line in open(f"{index['items']['0']}/test.jsonl")]
    y = np.asarray([i["label"] for i in items])
    for subject in index["subjects"]:
        probs = {r["index"]: r["prob"] for r in map(json.loads, open(subject["probs"]))}
        p = np.asarray([probs[i] for i in range(len(y))])
        [row] = [r for pair in results["pairs"] for r in pair["rows"] if r["subject"] == subject["name"]]
        assert row["accuracy"]["mean"] == pytest.approx(np.mean((p > 0.5) == y))
        assert row["auc"]["mean"] == pytest.approx(sklearn.roc_auc_score(y, p))


def test_w2s_report_rebuilds_the_same_results(finished, capsys):
    _, base, results, _ = finished
    (base / "run" / "results.json").unlink()
    assert main(["report", str(base / "run"), "--no-figures"]) == 0
    assert "student/cross_entropy" in capsys.readouterr().out
    assert json.loads((base / "run" / "results.json").read_text()) == json.loads(json.dumps(results))


def test_dry_run_lists_every_stage_and_loads_no_model(root, tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("a dry run loaded a model")

    monkeypatch.setattr("w2s_jax.pipeline.models.load_model", no_model)
    monkeypatch.setattr("w2s_jax.models.classifier.load_classifier", no_model)
    argv = ["run", str(SHIPPED), "--out", str(tmp_path / "run"), "--store", str(tmp_path / "store"), "--dry-run"]
    for item in make_world(root):
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[to run] weak-model/" in out and "[to run] student/aux_confidence/" in out
    stages = [line for line in out.splitlines() if line.startswith("[")]
    assert f"{len(stages)} of {len(stages)} stages to run" in out
    assert not (tmp_path / "run").exists()


def test_a_killed_run_resumes_without_recomputing_and_ends_the_same(root, finished, tmp_path, monkeypatch):
    from w2s_jax.classify.stages_strong import ICLRefine

    config, base, results, first = finished
    original, calls = ICLRefine.process, []

    def dying(self, res, units):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed in the second chunk of the in-context refinement
        return original(self, res, units)

    monkeypatch.setattr(ICLRefine, "process", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(config, tmp_path / "run", tmp_path / "store", figures=False)
    monkeypatch.setattr(ICLRefine, "process", original)
    done_before = {p.parent.name for p in (tmp_path / "store").glob("*/manifest.json")
                   if json.loads(p.read_text())["status"] == "done"}
    resumed, lines, executed = _run(config, tmp_path / "run", tmp_path / "store", figures=False)
    assert not {f"{s.slug}-{s.key[:16]}" for s in executed} & done_before  # nothing finished ran again
    assert len(executed) + len(done_before) == len(first)  # every stage ran exactly once in all
    refine = [s for s in executed if isinstance(s, ICLRefine)]
    assert len(refine) == 1 and len(calls) == 2  # the refinement resumed at its second chunk
    assert any(line.startswith("[done]") and "(cached)" in line for line in lines)
    assert json.dumps(resumed) == json.dumps(results)  # (NaN intervals compare equal as text)


def test_a_changed_setting_recomputes_only_what_depends_on_it(root, finished, tmp_path):
    config, base, results, first = finished
    changed = tiny_config(root, ["seeds=[0]", "losses.aux_confidence.max_weight=0.5"])
    _, _, executed = _run(changed, tmp_path / "run", base / "store", figures=False)
    assert sorted(s.name.split("/")[:2] for s in executed) == [["probs", "student"], ["student", "aux_confidence"]]
    assert all(s.name.startswith(("student/aux_confidence/", "probs/student/aux_confidence/")) for s in executed)


def test_a_bad_row_is_one_line_naming_the_row_and_field_before_anything_runs(root, tmp_path, capsys):
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    del rows[5]["question"]
    bad = tmp_path / "train.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["run", str(SHIPPED), "--out", str(tmp_path / "run"), "--store", str(tmp_path / "store")]
    for item in make_world(root):
        argv += ["--set", item]
    assert main(argv + ["--set", f'task.train="{bad}"']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad}: row 5 has no 'question' field" in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()
    assert main(argv + ["--set", "task.n_test=400"]) == 2
    assert "400 balanced items asked for (task.n_test), but only" in capsys.readouterr().err


def test_a_run_killed_between_a_students_training_and_its_predictions_restores_the_student(root, finished,
                                                                                           tmp_path, monkeypatch):
    """The student's fine-tuning is done when the kill lands in its first prediction chunk; the
    resumed run restores it from its checkpoint (training nothing) and predicts as the uninterrupted
    run did."""
    from w2s_jax.classify.stages_models import FitClassifier, Probabilities

    config, base, results, first = finished
    original, calls = Probabilities.process, []

    def dying(self, res, units):
        if self.classifier.role == "student":
            calls.append(1)
            raise KeyboardInterrupt
        return original(self, res, units)

    monkeypatch.setattr(Probabilities, "process", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(config, tmp_path / "run", tmp_path / "store", figures=False)
    monkeypatch.setattr(Probabilities, "process", original)
    trained = []
    fit = FitClassifier._train
    monkeypatch.setattr(FitClassifier, "_train", lambda self, res, directory, log=None: (
        trained.append((self.name, log is not None)), fit(self, res, directory, log))[1])
    resumed, _, executed = _run(config, tmp_path / "run", tmp_path / "store", figures=False)
    [student] = [s for s in executed if isinstance(s, Probabilities) and s.classifier.role == "student"][:1]
    assert (student.classifier.name, False) in trained  # restored (no training log), not a stage run
    assert student.classifier not in executed
    assert json.dumps(resumed) == json.dumps(results)


def test_a_lora_student_restored_from_its_checkpoint_predicts_as_trained(root, tmp_path):
    from w2s_jax.classify.run import resources
    from w2s_jax.classify.stages_models import Probabilities
    from w2s_jax.pipeline import Store, run_stages
    from w2s_jax.inference.features import classifier_probs

    config = tiny_config(root, ["seeds=[0]", "train.lora_rank=2", 'train.lora_targets=["q_proj", "v_proj"]'])
    [probs] = [s for s in classification_graph(config).stages
               if isinstance(s, Probabilities) and s.name.startswith("probs/student/cross_entropy/")]
    store = Store(tmp_path / "store")
    run_stages([probs], resources(config, store, show_progress=False), log=lambda line: None)
    stored = probs.soft_labels(store)
    fresh = resources(config, store, show_progress=False)  # nothing in memory: restores the checkpoint
    model, tokenizer = probs.classifier.classifier(fresh)
    texts = [item["text"] for item in probs.classifier.items.items(store, "test")]
    again = classifier_probs(model, tokenizer, texts, batch_size=3, max_len=config.train.max_len,
                             show_progress=False)[:, 1]
    np.testing.assert_allclose(again, [stored[i] for i in range(len(texts))], rtol=1e-5, atol=1e-6)
    assert len(set(np.round(again, 6))) > 1  # the trained head and adapters, not a constant


def test_several_processes_are_refused_with_the_alternative(root, tmp_path, monkeypatch):
    from w2s_jax.pipeline import ExperimentError

    monkeypatch.setattr("jax.process_count", lambda: 2)
    with pytest.raises(ExperimentError, match="uses one process .* with models.mesh instead"):
        run_classification(tiny_config(root), run_dir=tmp_path / "run", store=tmp_path / "store")
    assert not (tmp_path / "run").exists()
