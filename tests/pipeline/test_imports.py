"""The pipeline's place in the package: it imports nothing above it (the CLI, the concept world,
which is built on it), the concept world reaches it through public names only, and the package's
parts import each other without a circle."""

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


def _part(module: str) -> str:
    """The part of the package a module belongs to: ``w2s_jax.pipeline.stage`` -> ``pipeline``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_parts_of_the_package_import_each_other_without_a_circle():
    """Every import between parts (subpackages and top-level modules), deferred ones inside
    functions included, forms a graph with no cycle; the concept world sits above the pipeline."""
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        for imported, _ in _imports(path):
            if imported.startswith("w2s_jax.") and _part(imported) != _part(module):
                graph.setdefault(_part(module), set()).add(_part(imported))
    order, state = [], {}

    def visit(part, path=()):
        if state.get(part) == "done":
            return
        assert state.get(part) != "open", f"import circle: {' -> '.join(path + (part,))}"
        state[part] = "open"
        for other in sorted(graph.get(part, ())):
            visit(other, path + (part,))
        state[part] = "done"
        order.append(part)

    for part in sorted(graph):
        visit(part)
    assert "pipeline" in graph["concept_world"] and "concept_world" not in graph["pipeline"]
    assert not graph["pipeline"] & {"cli", "cli_pipeline", "concept_world"}


def test_each_shared_name_is_defined_once_where_it_belongs():
    """One ``Subject`` in the package (the pipeline report's row), one ``NoOptions``, and the
    sampling settings (``Generation``) with inference."""
    defined: dict[str, list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name in ("Subject", "NoOptions", "Generation"):
                where = str(path.relative_to(ROOT))
                defined.setdefault(node.name, []).append(where)
    assert defined == {"Subject": ["pipeline/plan.py"], "NoOptions": ["tasks/base.py"],
                       "Generation": ["inference/generation_settings.py"]}
