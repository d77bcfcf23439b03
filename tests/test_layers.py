"""The import graph of goose_lib follows the data flow: no circles, and no module imports from a
layer above its own (top-level and function-level imports alike). The layers are written in
docs/interfaces.md; this test is where they are enforced."""

from __future__ import annotations

import ast
from pathlib import Path

import goose_lib

PKG = Path(goose_lib.__file__).parent

# Lowest first. A module may import its own layer and the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("goose_lib", "goose_lib.ontology", "goose_lib.config", "goose_lib.io", "goose_lib.paths",  # ground
     "goose_lib.quiet", "goose_lib.runtime"),
    ("goose_lib.data", "goose_lib.models", "goose_lib.metrics"),
    ("goose_lib.infer",),
    ("goose_lib.teacher",),
    ("goose_lib.train",),
    ("goose_lib.viz",),
    ("goose_lib.params",),
    ("goose_lib.reports",),
    ("goose_lib.cli", "goose_lib.__main__"),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every goose_lib module ``path`` imports, anywhere in the file (``from goose_lib import x``
    counts as ``goose_lib.x`` when x is a module; relative imports are resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("goose_lib")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("goose_lib"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if (PKG.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                          or (PKG.parent / Path(*sub.split("."))).is_dir() else base)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, _module_name(p)) for p in PKG.rglob("*.py")}


def _layer(module: str) -> int:
    best = None
    for i, roots in enumerate(LAYERS):
        for root in roots:
            inside = module == root or (root != "goose_lib" and module.startswith(root + "."))
            if inside and (best is None or len(root) > best[1]):
                best = (i, len(root))
    assert best is not None, f"{module}: in no layer of LAYERS (add it, and to docs/interfaces.md)"
    return best[0]


def test_no_import_reaches_a_higher_layer() -> None:
    upward = sorted(f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
                    for m, targets in _graph().items() for t in targets if _layer(t) > _layer(m))
    assert upward == []


def test_the_import_graph_has_no_circles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == "goose_lib" or nxt not in graph:  # the package's empty __init__ imports nothing
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_the_checker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    # the analysis itself: an import inside a function and a relative import are both found
    src = PKG / "infer" / "evaluate.py"
    found = _imports(src, "goose_lib.infer.evaluate")
    assert "goose_lib.infer.tta" in found  # `from .tta import ...` at top level
    assert "goose_lib.metrics" in found
    assert _layer("goose_lib.teacher.cache") > _layer("goose_lib.infer.tta") > _layer("goose_lib.models.sam3")
