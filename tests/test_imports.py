"""No import cycles in salient_outpaint, module by module and package by package, counting the imports
inside functions too: a cycle hidden in a function-level import is still two rooms that need each other.

The checker reads the source with `ast` and imports nothing. `import a.b` and `from a import b` name the
module a.b when a/b.py (or a/b/__init__.py) exists; `from a import name` for any other name names a
itself (its __init__). Parent packages that an import runs on the way are not counted, so a package's
__init__ may re-export its own submodules. Imports under `if __name__ == "__main__":` count like any other
(`python -m salient_outpaint.data.shards pack` reaches the packer through data/shards/__main__.py, a module
of its own, not through the reader it runs beside).
"""
from __future__ import annotations

import ast
from pathlib import Path

import salient_outpaint

PACKAGE_ROOT = Path(salient_outpaint.__file__).parent


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the package at `root`, by dotted name (a package by its own name, for __init__.py)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_statements(tree: ast.AST):
    """Every import statement of a module, at any depth (functions, classes, branches)."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that module `name` imports anywhere in its file, functions included."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in import_statements(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph seen from above: each subpackage and top-level module of the root is one node
    (the root's own __init__ is the root), an edge wherever one of its modules imports another's."""
    def node(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, imports in graph.items():
        packages.setdefault(node(module), set()).update(node(imported) for imported in imports)
    return {package: imports - {package} for package, imports in packages.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of nodes, as [a, b, ..., a], shortest from the
    group's first node (Tarjan's algorithm finds the groups)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        for neighbour in sorted(graph.get(node, ())):
            if neighbour not in index:
                connect(neighbour)
                lowlink[node] = min(lowlink[node], lowlink[neighbour])
            elif neighbour in stack:
                lowlink[node] = min(lowlink[node], index[neighbour])
        if lowlink[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [shortest_cycle(graph, group) for group in sorted(groups)]


def shortest_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first, within the group, until an edge leads back to the start
        next_frontier = []
        for node in frontier:
            for neighbour in sorted(graph[node] & members):
                if neighbour == start:
                    return paths[node] + [start]
                if neighbour not in paths:
                    paths[neighbour] = paths[node] + [neighbour]
                    next_frontier.append(neighbour)
        frontier = next_frontier
    raise AssertionError(f"{group} is not strongly connected")


def report(found: list[list[str]]) -> str:
    return "import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in found)


def test_no_module_imports_itself_through_others():
    found = cycles(import_graph(PACKAGE_ROOT))
    assert not found, report(found)


def test_no_package_imports_itself_through_others():
    found = cycles(package_graph(import_graph(PACKAGE_ROOT)))
    assert not found, report(found)


def test_the_checker_finds_a_planted_cycle_through_a_function_level_import(tmp_path):
    root = tmp_path / "planted"
    (root / "data").mkdir(parents=True)
    (root / "evaluation").mkdir()
    files = {
        "__init__.py": "from .config import SIZE\n",
        "config.py": "SIZE = 8\n",
        "data/__init__.py": "",
        "data/shards.py": "from . import specs\nfrom ..config import SIZE\n",
        "data/pack.py": "from . import specs\nfrom .shards import SIZE\n",
        "data/pack_main.py": "if __name__ == '__main__':\n    from .pack import main\n",
        "data/specs.py": "def build():\n    from .shards import ShardDataset\n    return ShardDataset\n",
        "evaluation/__init__.py": "",
        "evaluation/run.py": "import planted.data.specs\n",
        "evaluation/points.py": "X = 1\n",
        "data/masks.py": "def sample():\n    from ..evaluation.points import X\n    return X\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    graph = import_graph(root)
    assert graph["planted.data.specs"] == {"planted.data.shards"}  # found inside the function
    assert graph["planted.data.shards"] == {"planted.data.specs", "planted.config"}
    assert graph["planted.data.pack"] == {"planted.data.specs", "planted.data.shards"}  # a module, a name
    assert graph["planted.data.pack_main"] == {"planted.data.pack"}  # under `if __name__ == "__main__":`
    assert cycles(graph) == [["planted.data.shards", "planted.data.specs", "planted.data.shards"]]
    assert "planted.data.shards -> planted.data.specs -> planted.data.shards" in report(cycles(graph))

    # no module cycle between data/masks.py and evaluation/run.py, but the two packages need each other
    assert cycles(package_graph(graph)) == [["planted.data", "planted.evaluation", "planted.data"]]

    (root / "data/specs.py").write_text("SPEC = 1\n")  # the cycle broken: only the packages' one remains
    assert cycles(import_graph(root)) == []
    (root / "data/masks.py").write_text("X = 1\n")
    assert cycles(package_graph(import_graph(root))) == []
