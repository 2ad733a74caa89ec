"""Every experiment file shipped in experiments/ and experiments/paper/ loads into a typed
experiment, names models that are hub names or directories, and lists methods and tasks that exist
(data and models themselves are downloaded on a machine with internet, so they are not fetched
here)."""

from pathlib import Path

import pytest

from w2s_jax.cli_pipeline import shipped_experiments
from w2s_jax.pipeline import Split, load_experiment
from w2s_jax.pipeline.plan import build_plan, check_model

ROOT = Path(__file__).resolve().parents[2]
PAPER = sorted((ROOT / "experiments" / "paper").glob("*.toml"))
FILES = [p for p in shipped_experiments() if p not in PAPER]


def test_w2s_list_finds_both_folders():
    assert set(shipped_experiments()) == set(FILES) | set(PAPER) and PAPER and FILES


def test_the_paper_settings_are_shipped():
    names = {p.stem for p in FILES}
    assert {"gsm8k", "math", "persona_pirate", "explain_technique"} <= names
    assert all(p.parent == Path(__file__).resolve().parents[2] / "experiments" for p in FILES)


def test_the_papers_own_settings_are_shipped():
    assert {p.stem for p in PAPER} == {"gsm8k", "math", "persona_truthfulqa", "persona_alpacaeval",
                                       "persona_mmlu", "explain_technique", "bias"}


@pytest.mark.parametrize("path", FILES + PAPER, ids=[f"{p.parent.name}/{p.stem}" for p in FILES + PAPER])
def test_shipped_experiment_validates(path):
    import tomllib

    if tomllib.loads(path.read_text()).get("kind") == "concept-world":  # builds its own models and data
        from w2s_jax.concept_world.config import load_concept_world

        assert load_concept_world(path).seeds and load_concept_world(path, quick=True).seeds == (0,)
        return
    if tomllib.loads(path.read_text()).get("kind") == "classification":  # tests/classify/test_config.py
        from w2s_jax.classify import load_classification

        assert load_classification(path).models.pairs()
        return
    config = load_experiment(path)
    models = config.models
    for name in (models.strong, *models.weak, *models.intermediate, *([models.judge] if models.judge else [])):
        check_model(config, name, "model")
    if config.task.needs_judge:
        assert models.judge and config.judge is not None
    stages, subjects = build_plan(config, Split("train", ()), Split("test", ()))
    roles = {s.role for s in subjects}
    assert "weak" in roles and ("zero-shot" in roles) == any(not m.trains for m in config.methods)
    assert len({s.name for s in stages}) == len(stages)


def test_readme_experiment_example_loads(tmp_path):
    """The experiment file shown in README.md is a valid experiment (its keys and values)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.toml").write_text(block)
    config = load_experiment(tmp_path / "example.toml")
    assert config.task.name == "math" and [m.name for m in config.methods][:2] == ["zero-shot", "naive"]
    assert config.train.lora_rank == 16
