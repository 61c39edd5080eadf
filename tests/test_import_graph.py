"""The packages' import graph (every import, function-level ones included, read with ast):
no cycles, and dependencies run one way: executor <- runtime <- export <- train, with the
model definitions (modeling) shared by export and train."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"executor": "executor", "runtime": "runtime", "modeling": "modeling",
            "export": "export", "train": "train"}
# what each package may import (besides itself)
ALLOWED = {
    "executor": set(),
    "runtime": {"executor"},
    "modeling": set(),
    "export": {"executor", "runtime", "modeling"},
    "train": {"executor", "runtime", "modeling", "export"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(["mycelium", package, *parts])] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the mycelium modules it imports, anywhere in its body."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        base = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                anchor = base[: len(base) - node.level + 1] if node.level else []
                module = ".".join([*anchor, *(node.module or "").split(".")]).strip(".")
                module = module.replace("..", ".")
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules
                           else module for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def wrong_way(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports against the dependency direction."""
    def package(module: str) -> str:
        return module.split(".")[1]

    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if package(b) != package(a) and package(b) not in ALLOWED[package(a)])


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_dependencies_run_one_way() -> None:
    assert wrong_way(import_graph()) == []


if __name__ == "__main__":
    graph = import_graph()
    print("modules:", len(graph), "imports:", sum(map(len, graph.values())))
    print("cycles:", cycles(graph) or "none")
    print("against the direction:", wrong_way(graph) or "none")
