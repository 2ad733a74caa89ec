"""``theory/simulate.py`` end to end: every experiment runs (quick), writes its files, is deterministic."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from theory import figures
from theory.experiments import EXPERIMENTS, get
from theory.simulate import main

REPO = Path(__file__).resolve().parent.parent


def test_every_experiment_file_declares_a_runnable_experiment():
    assert set(EXPERIMENTS) == {"ft_trapped", "refine_decay", "weak_quality", "noisy", "misaligned"}
    for name, exp in EXPERIMENTS.items():
        assert exp.name == name
        assert callable(exp.sweep.run) and type(exp.quick) is type(exp.sweep)
        assert callable(getattr(figures, exp.figure))
        doc = sys.modules[f"theory.experiments.{name}"].__doc__
        assert doc and len(doc.split()) > 10, f"{name} needs a docstring saying what it reproduces"


def test_quick_run_writes_all_outputs_and_every_check_passes(tmp_path, capsys):
    rc = main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    for name in EXPERIMENTS:
        for ext in ("json", "png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 0
        payload = json.loads((tmp_path / f"{name}.json").read_text())
        assert payload["checks"] and all(c["passed"] for c in payload["checks"])
        assert payload["table"]["rows"]
    summary = (tmp_path / "summary.md").read_text()
    assert "0 failed" in summary and "FAIL**" not in summary


def test_same_seed_same_numbers_different_seed_different(tmp_path):
    runs = {}
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert main(["--experiment", "refine_decay", "--quick", "--seed", str(seed), "--no-figures",
                     "--trials", "60", "--out", str(tmp_path / tag)]) in (0, 1)
        runs[tag] = json.loads((tmp_path / tag / "refine_decay.json").read_text())["series"]
    assert runs["a"] == runs["b"]
    assert runs["a"]["err"] != runs["c"]["err"]


def test_list_and_unknown_experiment(capsys):
    assert main(["--list"]) == 0
    assert "refine_decay" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--experiment", "no_such_thing"])
    assert exc.value.code == 2
    assert "no_such_thing" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no_such_thing"):
        get("no_such_thing")


def test_script_runs_from_the_repo_root_as_a_file():
    proc = subprocess.run([sys.executable, "theory/simulate.py", "--list"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ft_trapped" in proc.stdout


def test_resume_reuses_finished_experiments_with_the_same_settings(tmp_path, capsys):
    argv = ["--experiment", "misaligned", "--quick", "--trials", "40", "--no-figures", "--out", str(tmp_path)]
    assert main(argv) == 0
    first = json.loads((tmp_path / "misaligned.json").read_text())
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert "reused from" in capsys.readouterr().out
    assert json.loads((tmp_path / "misaligned.json").read_text()) == first  # not rewritten
    # different settings are recomputed, never mixed up with the stored result
    assert main(argv + ["--resume", "--seed", "1"]) == 0
    assert "reused from" not in capsys.readouterr().out
    assert json.loads((tmp_path / "misaligned.json").read_text())["seed"] == 1
