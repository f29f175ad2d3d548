"""The library's shape (DESIGN §4): imports point one way, modules stay small and say what they own."""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "steerkit"


def _imports(path: Path) -> set[str]:
    """Every ``steerkit.X`` a module imports: module level, inside functions and under ``TYPE_CHECKING`` alike."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "steerkit":
                found |= {f"steerkit.{alias.name}" for alias in node.names if (LIBRARY / f"{alias.name}.py").is_file()}
            elif node.module.startswith("steerkit."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("steerkit.")}
    return found


def graph() -> dict[str, set[str]]:
    modules = {f"steerkit.{p.stem}": p for p in LIBRARY.glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_value_object_imports_only_what_lies_below_it() -> None:
    edges = graph()
    below = edges["steerkit.vector"]
    assert below <= {
        "steerkit.config",
        "steerkit.format",
        "steerkit.card",
        "steerkit.hub",
        "steerkit.constants",
        "steerkit.errors",
        "steerkit._io",
    }, below
    for low in ("steerkit.config", "steerkit.format", "steerkit.card", "steerkit.hub", "steerkit._hub_errors"):
        assert "steerkit.vector" not in edges[low], low
    # scoring takes a plain Steering value: it never reaches into the decode layer
    for module in ("steerkit.scoring", "steerkit.batching", "steerkit.evaluate", "steerkit.tune"):
        assert "steerkit.decode" not in edges[module], module


def test_every_module_is_small_and_opens_with_what_it_owns() -> None:
    for path in sorted(LIBRARY.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 400, f"{path.name} has {len(text.splitlines())} lines"
        doc = ast.get_docstring(ast.parse(text))
        assert doc and "TODO" not in doc, f"{path.name} has no module docstring"


def test_the_library_never_imports_the_cli_stack() -> None:
    for path in LIBRARY.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("typer", "rich", "steerkit_cli"), (path.name, name)
