"""The pipeline's place in the package: it imports nothing above it (the CLI, the concept world,
which is built on it), and the concept world reaches it through public names only."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "w2s_jax"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_the_pipeline_imports_neither_the_cli_nor_the_concept_world():
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        for module, _ in _imports(path):
            assert not module.startswith(("w2s_jax.cli", "w2s_jax.concept_world")), (path.name, module)


def test_the_concept_world_uses_public_pipeline_names_only():
    for path in sorted((ROOT / "concept_world").glob("*.py")):
        for module, names in _imports(path):
            if module.startswith("w2s_jax.pipeline"):
                assert not any(name.startswith("_") for name in names), (path.name, module, names)
