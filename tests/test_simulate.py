"""``theory/simulate.py`` end to end: every experiment runs (quick), writes its files, is deterministic."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from theory import figures, simulate
from theory.experiments import EXPERIMENTS, get
from theory.simulate import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_persistent_cache(monkeypatch):
    """In-process runs leave JAX's persistent compilation cache off: a test writes nothing outside
    its temporary directory (the subprocess test below turns it on, in a directory of its own)."""
    monkeypatch.setenv("W2S_COMPILATION_CACHE", "off")


def test_every_experiment_file_declares_a_runnable_experiment():
    assert set(EXPERIMENTS) == {"ft_trapped", "refine_decay", "weak_quality", "noisy", "misaligned", "misfit"}
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
        assert payload["checks"] and all(c["passed"] is True for c in payload["checks"])  # none N/A here
        assert payload["table"]["rows"]
        assert payload["setting"] == {"model": {"d": 20, "K": 5, "alpha": None, "k_star": 0, "sigma": 0.5,
                                                "feature_scales": None},
                                      "supervisor": {"name": "biased", "delta": 1.0}}
    summary = (tmp_path / "summary.md").read_text()
    assert "0 failed" in summary and "FAIL**" not in summary


def test_same_seed_same_numbers_different_seed_different(tmp_path):
    """At 60 trials every check of refine_decay passes with a margin (fitted rate within 10% of
    rho*, where 25% is allowed; Chernoff slack 0.07; risk at most 0.63 of its bound) for both seeds,
    so the exit code is 0; it must also agree with the checks written to the JSON."""
    runs, codes = {}, {}
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        codes[tag] = main(["--experiment", "refine_decay", "--quick", "--seed", str(seed), "--no-figures",
                           "--trials", "60", "--out", str(tmp_path / tag)])
        payload = json.loads((tmp_path / tag / "refine_decay.json").read_text())
        assert codes[tag] == (0 if all(c["passed"] for c in payload["checks"]) else 1), (tag, payload["checks"])
        runs[tag] = payload["series"]
    assert codes == {"a": 0, "b": 0, "c": 0}
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


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if an experiment starts: usage errors must come before any computation."""
    def refuse(*args, **kwargs):
        raise AssertionError("an experiment ran before the usage error")

    monkeypatch.setattr(simulate, "run_experiment", refuse)


def test_out_naming_a_file_is_a_usage_error_before_any_computation(tmp_path, capsys, no_compute):
    afile = tmp_path / "results.txt"
    afile.write_text("not a directory")
    for out in (afile, afile / "sub"):
        with pytest.raises(SystemExit) as exc:
            main(["--experiment", "misaligned", "--quick", "--out", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"--out {out}" in err and "directory" in err, err


def test_out_that_cannot_be_written_is_a_usage_error(tmp_path, capsys, monkeypatch, no_compute):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(simulate.tempfile, "TemporaryFile", read_only)  # what a read-only directory does
    with pytest.raises(SystemExit) as exc:
        main(["--quick", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert f"--out {tmp_path}: cannot write there (Permission denied)" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes through permission bits")
def test_out_in_a_read_only_directory_is_a_usage_error(tmp_path, capsys, no_compute):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(SystemExit) as exc:
            main(["--quick", "--out", str(locked / "results")])
        assert exc.value.code == 2
        assert "cannot write there" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("seed", [str(2**63), str(-(2**63) - 1), str(10**30)])
def test_seed_outside_64_bits_is_a_usage_error_saying_what_is_allowed(seed, tmp_path, capsys, no_compute):
    with pytest.raises(SystemExit) as exc:
        main(["--quick", "--seed", seed, "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--seed must be an integer in [-2**63, 2**63 - 1]" in err and seed in err, err


def test_seed_range_edges_are_accepted(tmp_path):
    for seed in (2**63 - 1, -(2**63), -1):
        assert simulate.parse_args(["--seed", str(seed), "--out", str(tmp_path)]).seed == seed
        jax.random.key(seed)  # and JAX takes them


def test_repeated_experiment_runs_once_in_first_given_order(tmp_path):
    args = simulate.parse_args(["--experiment", "noisy", "--experiment", "misaligned", "--experiment", "noisy",
                                "--out", str(tmp_path)])
    assert args.experiment == ["noisy", "misaligned"]


def test_script_fills_the_compilation_cache_and_reuses_it(tmp_path):
    """A run writes its compiled programs to W2S_COMPILATION_CACHE; the next run reads them."""
    cache = tmp_path / "cache"
    env = dict(os.environ, W2S_COMPILATION_CACHE=str(cache), JAX_PLATFORMS="cpu")
    argv = [sys.executable, "theory/simulate.py", "--experiment", "misaligned", "--quick", "--trials", "20",
            "--no-figures", "--out", str(tmp_path / "out")]
    first = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "nothing was cached"
    second = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in cache.iterdir()) == entries  # every program found: nothing new written


HIDDEN = {  # settings the experiments were not written for, reached through the flags alone
    "noisy": ["--set", "supervisor=noisy", "--set", "supervisor.eta=0.5"],
    "misaligned": ["--set", "supervisor=misaligned", "--set", "supervisor.gamma=0.3", "--set", "supervisor.delta=0.5",
                   "--set", "supervisor.j=2"],
}
SHARED = ["--set", "model.d=30", "--set", "model.K=8", "--set", "model.alpha=[0.3,0.1,0.1,0.1,0.1,0.1,0.1,0.1]",
          "--set", "model.sigma=1"]


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_other_settings_pass_or_say_why_a_claim_does_not_apply(name, tmp_path, capsys):
    rc = main(["--quick", "--trials", "60", "--no-figures", "--out", str(tmp_path)] + SHARED + HIDDEN[name])
    out = capsys.readouterr().out
    assert rc == 0, out
    for exp in EXPERIMENTS:
        payload = json.loads((tmp_path / f"{exp}.json").read_text())
        assert payload["setting"]["model"]["d"] == 30 and payload["setting"]["supervisor"]["name"] == name
        for c in payload["checks"]:
            assert c["passed"] is True or (c["passed"] is None and "not applicable here: " in c["detail"]), (exp, c)
    assert "d=30, K=8" in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize("flags,fragment", [
    (["--set", "model.K=40"], "K=40"),
    (["--set", "supervisor.eta=1"], "supervisor.eta is not a parameter of the biased supervisor"),
    (["--set", "model.sigma=0"], "sigma=0"),
])
def test_bad_setting_is_a_usage_error_naming_the_parameter(flags, fragment, tmp_path, capsys, no_compute):
    with pytest.raises(SystemExit) as exc:
        main(["--quick", "--out", str(tmp_path)] + flags)
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


def test_config_file_sets_the_setting_an_experiment_runs_in(tmp_path, capsys):
    config = tmp_path / "setting.toml"
    config.write_text('[model]\nd = 8\nK = 3\n\n[supervisor]\nname = "biased"\ndelta = 0.5\n')
    assert main(["--config", str(config), "--experiment", "refine_decay", "--quick", "--trials", "20",
                 "--no-figures", "--out", str(tmp_path / "out")]) in (0, 1)
    payload = json.loads((tmp_path / "out" / "refine_decay.json").read_text())
    assert payload["setting"]["model"]["d"] == 8 and payload["setting"]["supervisor"]["delta"] == 0.5
    assert "ConceptModel(d=8, K=3" in payload["sweep"]
