"""The layout of the code: no import cycles between the project's modules, no huge modules.

Read from the source with :mod:`ast`, nothing imported: fast, and it sees the
imports inside functions that an import-time check would miss.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The installed name of each source folder, as pyproject.toml maps them.
PACKAGES = {
    folder: package
    for package, folder in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]["package-dir"].items()
}
MAX_LINES = 800


def _modules(root: Path, packages: dict[str, str]) -> dict[str, Path]:
    """Every module of ``packages`` (folder: installed name) by dotted name."""
    found = {}
    for folder, package in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            dotted = (package, *(parts[:-1] if parts[-1] == "__init__" else parts))
            found[".".join(dotted)] = path
    return found


class _Imports(ast.NodeVisitor):
    """The import statements of a tree, at any depth, but not those only type checkers run."""

    def __init__(self) -> None:
        self.found: list[ast.Import | ast.ImportFrom] = []

    def visit_Import(self, node: ast.Import) -> None:
        self.found.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.found.append(node)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for statement in node.orelse:  # what runs when not type checking
                self.visit(statement)
        else:
            self.generic_visit(node)


def _targets(
    statement: ast.Import | ast.ImportFrom, importer: str, path: Path, modules: dict[str, Path]
) -> Iterator[str]:
    """The project modules an import statement names (``from pkg import sub`` names ``pkg.sub``)."""
    if isinstance(statement, ast.Import):
        names = [alias.name for alias in statement.names]
    else:
        base = statement.module or ""
        if statement.level:  # relative: from the importer's package upwards
            package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
            for _ in range(statement.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in statement.names
        ]
    yield from (name for name in names if name in modules)


def import_graph(root: Path = ROOT, packages: dict[str, str] = PACKAGES) -> dict[str, set[str]]:
    """Which project modules each project module imports, at the top or inside functions.

    Only what an import statement names: ``import_module("...")`` is not an
    import, and importing ``a.b`` is not counted as importing ``a`` (every
    package's ``__init__`` would otherwise be in a cycle with its modules).
    """
    modules = _modules(root, packages)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imports = _Imports()
        imports.visit(ast.parse(path.read_text(), filename=str(path)))
        graph[name] = {
            target
            for statement in imports.found
            for target in _targets(statement, name, path, modules)
            if target != name
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def _a_cycle(graph: dict[str, set[str]], component: list[str]) -> str:
    """One import loop through ``component``, readable: ``a -> b -> a``."""
    members = set(component)
    path = [component[0]]
    while True:
        step = min(graph[path[-1]] & members)
        if step in path:
            loop = [*path[path.index(step) :], step]
            return " -> ".join(loop)
        path.append(step)


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles (counting imports inside functions):\n" + "\n".join(
        f"  {_a_cycle(graph, c)}   (modules: {', '.join(c)})" for c in found
    )


def test_no_module_is_over_800_lines() -> None:
    lengths = {
        path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
        for path in _modules(ROOT, PACKAGES).values()
    }
    long = {name: lines for name, lines in sorted(lengths.items()) if lines > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along a seam): {long}"


def test_the_graph_counts_imports_in_functions_but_not_for_type_checkers(
    tmp_path: Path,
) -> None:
    sources = {
        "pkg/__init__.py": "from pkg import _a\n",
        "pkg/_a.py": "import pkg._b\nfrom pkg._c import thing\n",
        "pkg/_b.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg import _a\nelse:\n    from . import _c\n"
        ),
        "pkg/_c.py": (
            "import importlib\n"
            "def later():\n    from .sub import _d\n    importlib.import_module('pkg._a')\n"
        ),
        "pkg/sub/__init__.py": "",
        "pkg/sub/_d.py": "from .. import _a\nfrom pkg import _missing, sub\nimport json\n",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    graph = import_graph(tmp_path, {"pkg": "pkg"})

    assert graph == {
        "pkg": {"pkg._a"},
        "pkg._a": {"pkg._b", "pkg._c"},
        "pkg._b": {"pkg._c"},
        "pkg._c": {"pkg.sub._d"},
        "pkg.sub": set(),
        "pkg.sub._d": {"pkg._a", "pkg", "pkg.sub"},
    }
    assert cycles(graph) == [["pkg", "pkg._a", "pkg._b", "pkg._c", "pkg.sub._d"]]
    assert (
        _a_cycle(graph, cycles(graph)[0])
        == "pkg -> pkg._a -> pkg._b -> pkg._c -> pkg.sub._d -> pkg"
    )


def test_every_package_folder_ships_in_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (the folders are renamed): none forgotten."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        name for name, path in _modules(ROOT, PACKAGES).items() if path.name == "__init__.py"
    }
    assert folders == set(setuptools["packages"])


def test_test_files_have_unique_basenames() -> None:
    """pytest imports test files by basename (tests have no packages): two of one name fail."""
    seen: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    shared = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not shared, f"rename one of each so pytest can collect them: {shared}"
