"""The layering written in docs/architecture.md, checked against every module's imports.

Each module belongs to the layer whose package prefix matches it most closely; it may import its
own layer and the layers below, never one above, and no two modules may import each other in a
cycle. The layer list is read from the document, so the code and its description cannot drift.
The root package's name (``server``) stands for its own ``__init__`` only, so a new package that
the document does not place fails the test instead of falling into the bottom layer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
ROOT_PACKAGE = "server"


def declared_layers() -> list[tuple[str, tuple[str, ...]]]:
    """(layer, module prefixes), top layer first, from the ```layers block of the document."""
    block = re.search(r"```layers\n(.*?)```", ARCHITECTURE.read_text(), re.DOTALL)
    assert block, "docs/architecture.md has no ```layers block"
    layers = []
    for line in block.group(1).splitlines():
        if line.strip():
            name, _, prefixes = line.partition(":")
            layers.append((name.strip(), tuple(prefixes.split())))
    return layers


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def server_imports(path: Path) -> set[str]:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        imported.update(name for name in names if name == "server" or name.startswith("server."))
    return imported


def modules() -> dict[str, set[str]]:
    found = {module_name(path): server_imports(path) for path in (REPO_ROOT / "server").rglob("*.py")}
    # An import names a module or something inside one: keep the longest existing module name.
    resolved = {}
    for name, targets in found.items():
        resolved[name] = {_existing(target, found) for target in targets} - {name}
    return resolved


def _existing(target: str, known: dict[str, set[str]]) -> str:
    while target not in known and "." in target:
        target = target.rpartition(".")[0]
    return target


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]]) -> int:
    best, best_length = -1, -1
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and prefix != ROOT_PACKAGE
            if (module == prefix or inside) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    assert best >= 0, f"module {module} belongs to no layer in docs/architecture.md"
    return best


def test_no_module_imports_a_layer_above_its_own() -> None:
    layers = declared_layers()
    upward = []
    for module, targets in sorted(modules().items()):
        own = layer_of(module, layers)
        for target in sorted(targets):
            if layer_of(target, layers) < own:  # a smaller index is a higher layer
                upward.append(f"{module} ({layers[own][0]}) imports {target} ({layers[layer_of(target, layers)][0]})")
    assert upward == [], "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = modules()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target] if target in path else [node, target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)
