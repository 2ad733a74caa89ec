"""`w2s run experiments/concept_world.toml --quick` end to end: setup stages, the pipeline per seed,
the sweeps and the report; a rerun recomputes nothing; input errors exit 2 before any work."""

import json
import re
from pathlib import Path

import pytest

from w2s_jax.cli import main
from w2s_jax.pipeline import stage_directories

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "concept_world.toml"


def test_quick_concept_world_through_w2s_run(tmp_path, capsys):
    out = tmp_path / "run"
    both = ["--set", 'sweeps.quality_methods=["naive", "icl-refine", "gold"]']
    assert main(["run", str(EXPERIMENT), "--quick", "--out", str(out), "--no-progress", *both]) == 0
    first = capsys.readouterr().out
    # the main and the quality parts both ask for the seed's gold student: it is computed once
    assert first.count("[ran]  finetune/gold") == 1 and first.count("[ran]  labels/gold") == 1
    unit = out / "world-0" / "seed-0"
    plans = [json.loads((unit / part / "plan.json").read_text()) for part in ("main", "quality")]
    gold = [next(s["records"] for s in plan["subjects"] if s["name"] == "student/gold") for plan in plans]
    assert gold[0] == gold[1]
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["main"]["rows"]}
    assert {"zero-shot", "student/gold", "weak/w0-weak-model", "student/icl-refine/w1-misaligned-0.30",
            "student/context-distill/w0-weak-model", "student/bootstrap/w0-weak-model"} <= set(rows)
    assert all(0 <= r["accuracy"]["value"] <= 1 for r in rows.values())
    # the weak baselines are the labels the students fit: 3 of the 10 training labels are j's
    misaligned = rows["weak/w1-misaligned-0.30"]
    assert misaligned["train_labels"]["value"] <= 0.7 and misaligned["train_labels_rival_rate"]["value"] > 0
    quality = {r["eta"]: r for r in results["quality"]["rows"] if r["role"] == "weak"}
    assert sorted(quality) == [0.0, 0.5] and quality[0.0]["train_labels"]["value"] == 1.0
    assert [r["n"] for r in results["demos"]["rows"]] == [0, 1, 2, 4] and results["demos"]["draw"] == "fresh"
    assert results["demos"]["rows"][-1]["bayes"]["value"] >= results["demos"]["rows"][0]["bayes"]["value"]
    assert [r["gamma"] for r in results["gamma"]["rows"]] == [0.0, 0.5, 1.0]
    assert results["gamma"]["rows"][0]["rho_star"]["value"] > 0 == results["gamma"]["rows"][-1]["rho_star"]["value"]
    assert [p["id"] for p in results["predictions"]] == ["P1", "P2", "P3", "P4", "P5"]
    assert [r["m"] for r in results["sizes"]["rows"]] == [5, 10] and "icl-refine" in results["sizes"]["rows"][0]
    assert (out / "world-0" / "seed-0" / "size-5" / "plan.json").is_file()
    assert set(results["curves"]) == {"strong", "intermediate", "weak"}
    assert results["gate"]["chunks"]["0"] == {"strong": 1, "intermediate": 1, "weak": 1, "intermediate_passed": False}
    # a method student's row carries the labels it fit (accuracy and j-rate on the training questions)
    refine = rows["student/icl-refine/w1-misaligned-0.30"]
    assert 0 <= refine["train_labels"]["value"] <= 1 and set(refine["train_labels_per_unit"]) == {"0/0"}
    # naive fits the weak labels as they are: its labels-fit figures are the labeller's own
    naive = rows["student/naive/w1-misaligned-0.30"]
    assert naive["train_labels"] == misaligned["train_labels"]
    assert naive["train_labels_rival_rate"] == misaligned["train_labels_rival_rate"]
    # the quick model is not held to the gate; the report says it is a smoke test unless it passed
    gate = results["gate"]["worlds"]["0"][-1]
    text = (out / "results.md").read_text()
    assert ("SMOKE TEST" in text) != gate["passed"]
    for figure in ("curves.png", "demos.png", "quality.png", "gamma.png", "gamma_rates.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    assert (unit / "main" / "results.json").is_file()
    setup = json.loads((stage_directories(out)["data/world-0/seed-0"] / "setup.json").read_text())
    assert not set(setup["gold_inputs"]) & set(setup["train_inputs"] + setup["test_inputs"])
    strong = stage_directories(out)["pretrain/strong/world-0"] / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in strong.iterdir()}
    capsys.readouterr()  # the pre-trained checkpoint works with `w2s generate` like any other
    assert main(["generate", "--model", str(strong), "--prompt", "Question: x1\nAnswer: y2\n\nQuestion: x3\nAnswer:",
                 "--max-new-tokens", "1", "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)["results"][0]["text"]
    assert re.fullmatch(r"y\d+", generated.strip()), generated  # an output token after the query
    assert main(["run", str(EXPERIMENT), "--quick", "--out", str(out), "--no-progress", "--no-figures", *both]) == 0
    rerun = capsys.readouterr().out
    assert "[ran]" not in rerun and rerun.count("(cached)") > 20
    assert json.loads((out / "results.json").read_text())["main"] == results["main"]
    (out / "results.json").unlink()
    assert main(["report", str(out), "--no-figures"]) == 0  # rebuilt from concept_world.json
    assert json.loads((out / "results.json").read_text())["gamma"] == results["gamma"]


@pytest.mark.parametrize("edit, message", [
    ('kind = "concept-world"\n[world]\nnum_concept = 3\n', "did you mean 'num_concepts'"),
    ('kind = "concept-world"\n[split]\nn_train = 99\n', "split.n_gold + split.n_train = 115 leaves no test input"),
    ('kind = "concept-world"\n[sweeps]\ndraw = "random"\n', "sweeps.draw must be one of ['fixed', 'fresh']"),
    ('kind = "concept-world"\n[gate]\ntolerance = -1\n', "gate.tolerance must be in [0, 1)"),
    ('kind = "concept-world"\n[models]\nstrong = "x"\n', "models.strong is set by the concept world"),
    ('kind = "concept-wrld"\n', "unknown experiment kind 'concept-wrld' (did you mean 'concept-world'?)"),
    ('kind = "concept-world"\n[train]\ntotal_step = 3\n', "did you mean 'total_steps'"),  # before pre-training
    ('kind = "concept-world"\n[intermediate]\nsteps = 3\n', "[intermediate] is no longer read"),
])
def test_bad_concept_world_files_exit_2(tmp_path, capsys, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit)
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_quick_is_refused_for_a_standard_experiment(tmp_path, capsys):
    path = tmp_path / "standard.toml"
    path.write_text('[task]\nname = "concept"\n')
    assert main(["run", str(path), "--quick"]) == 2
    assert "--quick" in capsys.readouterr().err


def test_the_graph_plans_gold_once_per_seed_and_runs_nothing(tmp_path):
    """The experiment kind turns the config into one graph: both parts of a seed ask for its gold
    student, which is one stage (one key) per seed; planning writes nothing."""
    from w2s_jax.pipeline import Store
    from w2s_jax.pipeline.kind import kind_of_file

    kind = kind_of_file(EXPERIMENT)
    config = kind.load(EXPERIMENT, quick=True, overrides=["seeds=[0, 1]",
                                                          'sweeps.quality_methods=["naive", "gold"]'])
    stages = kind.graph(config, Store(tmp_path / "store"))
    assert len({s.key for s in stages}) == len(stages)
    assert sorted(s.name for s in stages if s.name.startswith("finetune/gold")) == ["finetune/gold"] * 2
    assert {s.name for s in stages} >= {"pretrain/strong/world-0", "data/world-0/seed-1", "sweep-gamma/world-0/seed-1"}
    # one pre-training per world: the weak and intermediate models are its chunks
    assert [s.name for s in stages if s.name.startswith("pretrain/")] == ["pretrain/strong/world-0"]
    assert not (tmp_path / "store").exists()


def test_dry_run_lists_the_whole_graph_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(EXPERIMENT), "--quick", "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "[to run] pretrain/strong/world-0"
    assert any(line.startswith("[to run] finetune/gold") for line in lines)
    assert "[to run] weak-model/world-0/seed-0  (loads the model of pretrain/strong/world-0)" in lines
    total = len(lines) - 1
    assert lines[-1].startswith(f"{total} of {total} stages to run")
    assert not out.exists() and not (tmp_path / "store").exists()
