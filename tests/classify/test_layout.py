"""The classification kind's place in the package: the pipeline never imports it, it reaches the
pipeline through public names only, and `w2s run` finds it by the file's `kind`."""

import ast
from pathlib import Path

from w2s_jax.pipeline.kind import kind_of_file
from w2s_jax.registry import EXPERIMENT_KINDS

ROOT = Path(__file__).resolve().parents[2] / "w2s_jax"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names)


def test_the_pipeline_does_not_import_the_classification_kind():
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        assert not any(m.startswith("w2s_jax.classify") for m, _ in _imports(path)), path.name


def test_the_classification_kind_uses_public_pipeline_names_only():
    for path in sorted((ROOT / "classify").glob("*.py")):
        for module, names in _imports(path):
            if module.startswith("w2s_jax.pipeline"):
                assert not any(name.startswith("_") for name in names), (path.name, module, names)


def test_w2s_run_finds_the_kind_by_name(tmp_path):
    assert "classification" in EXPERIMENT_KINDS.all()
    path = tmp_path / "x.toml"
    path.write_text('kind = "classification"\n')
    assert kind_of_file(path).name == "classification"
    assert not kind_of_file(path).owns(tmp_path)
