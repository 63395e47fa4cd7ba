"""The house as the README's layout draws it, read from the code's own imports: which
room may import which, none reaching into another's private (``_``) modules, and no
circle between two files of the product (an import inside a function counts too: it
ties the files as much as one at the top does). Importing a module of a package runs the
package's ``__init__`` first; like most such readers, this one draws the arrow to the
module only."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("config", "core", "shop", "inventory", "livestream", "draws", "demand", "monitoring")
# What each app may import; config wires them all and nothing imports it.
MAY_IMPORT = {
    "core": set(),
    "inventory": {"core"},
    "shop": {"core", "inventory"},
    "livestream": {"core", "inventory", "shop"},
    "draws": {"core", "inventory", "shop", "livestream"},
    "demand": {"core", "inventory", "shop", "livestream", "draws"},
    "monitoring": {"core", "inventory", "shop", "livestream", "draws", "demand"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports() -> dict[str, set[str]]:
    """Each product module -> the product modules it imports (anywhere in it)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                # ``from package import module`` ties to the module; the package's
                # ``__init__`` runs first for any import of its modules and is not counted.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_two_files_of_the_product_import_each_other_round_a_circle():
    assert _circles(_imports()) == []


def test_each_app_imports_only_the_rooms_below_it():
    crossings = {
        f"{module} -> {target}"
        for module, targets in _imports().items()
        for target in targets
        if (app := module.partition(".")[0]) != "config"
        and (other := target.partition(".")[0]) != app
        and other not in MAY_IMPORT[app]
    }
    assert crossings == set()


def test_no_app_imports_a_private_module_of_another():
    """A module whose name starts with ``_`` belongs to its app alone; the others use
    the app's public names (``inventory.services`` re-exports what they may call), so
    the app can rearrange its insides without breaking them."""
    crossings = {
        f"{module} -> {target}"
        for module, targets in _imports().items()
        for target in targets
        if target.partition(".")[0] != module.partition(".")[0]
        and any(part.startswith("_") for part in target.split(".")[1:])
    }
    assert crossings == set()


def test_the_reader_finds_imports_of_every_kind():
    """The checks above only mean something if the reader sees the imports."""
    graph = _imports()
    assert "core.redis" in graph["livestream.hub"]  # from core.redis import ...
    assert "livestream.announce" in graph["livestream.receivers"]  # from livestream import x
    assert "livestream.receivers" in graph["livestream.apps"]  # inside a method
    assert "inventory.services._common" in graph["inventory.services.stock"]  # private
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
