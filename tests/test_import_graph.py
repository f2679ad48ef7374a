"""The import graph of ``ragtune/``: no cycle, and every import points down the layers of docs/design.md §11.

Every module is parsed with ``ast`` and every ``import`` / ``from ... import`` in it counts, at the top
or inside a function (lazy imports are imports), relative ones resolved; only those under
``if TYPE_CHECKING:`` are skipped (they never run). ``from pkg import name`` is an edge to the module
``pkg.name`` when there is one, else to ``pkg``. Importing ``a.b.c`` also runs ``a/__init__.py``; that
implicit edge is not drawn (every module would import the root package).

Two graphs are checked for cycles: the modules (``ragtune.tuning.study -> ragtune.tuning.results``) and
the units of the layer table (``tuning/``, ``cli.py``, ...), so that two packages importing each other
through different modules are a cycle too. The layer table is read from the ```text block of
docs/design.md §11 (top layer first; units separated by commas; a remark in parentheses is ignored),
so the document and this test cannot drift. A module may import its own layer or the ones below it.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ragtune"
DESIGN = REPO / "docs" / "design.md"
HEADING = "## 11. Dependency direction"

# Edges that break the rules: "importer -> imported" (exact module names) and why. They are left out
# of both checks. An entry whose edge is gone fails test_the_allow_list_only_shrinks: delete it, so
# the list only shrinks. (Empty since the ONNX engine moved beside the classification predictor.)
ALLOWED: dict[str, str] = {}


def read_layers(text: str) -> list[list[str]]:
    """The layer table of §11: the first ```text block after HEADING, one layer a line, top first."""
    if HEADING not in text:
        raise AssertionError(f"{DESIGN}: no heading {HEADING!r}")
    section = text[text.index(HEADING) + len(HEADING):].split("\n## ", 1)[0]
    block = re.search(r"^```text\n(.*?)^```", section, re.S | re.M)
    if block is None:
        raise AssertionError(f"{DESIGN}: §11 has no ```text block of layers")
    layers = [[u for u in (re.sub(r"\(.*?\)", "", unit).strip() for unit in line.split(",")) if u]
              for line in block.group(1).splitlines()]
    return [layer for layer in layers if layer]


def modules_of(package_dir: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` of every ``.py`` file of the package (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement below ``nodes``, in functions and classes too, except under ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, ast.If) and _type_checking(node.test):
            yield from import_nodes(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from import_nodes(ast.iter_child_nodes(node))


def import_edges(package_dir: Path) -> set[tuple[str, str]]:
    """``(importer, imported)`` for every import between two modules of the package."""
    modules = modules_of(package_dir)
    edges = set()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # from . import x / from ..y import z
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    edges.add((name, target))
    return edges


def unit_of(module: str, package_dir: Path) -> str:
    """The layer-table unit of a module: ``tuning/`` for ``pkg.tuning.study``, ``cli.py`` for ``pkg.cli``."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__.py"
    return f"{parts[0]}/" if (package_dir / parts[0]).is_dir() else f"{parts[0]}.py"


def find_cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one node."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = {v}
            while (w := stack.pop()) != v:
                component.add(w)
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in order:
            visit(v)
    cycles = []
    for component in components:  # the shortest way from the smallest node back to itself
        start = min(component)
        parent: dict[str, str] = {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            if start in graph[v]:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                cycles.append([*reversed(path), start])
                break
            for w in sorted(graph[v] & component):
                if w not in parent and w != start:
                    parent[w] = v
                    queue.append(w)
    return sorted(cycles)


def check(package_dir: Path, layers: list[list[str]], allowed: Iterable[str] = ()) -> list[str]:
    """Every cycle and every upward import of the package (``allowed`` edges left out), as messages."""
    skip = {tuple(edge.split(" -> ")) for edge in allowed}
    edges = import_edges(package_dir) - skip
    layer_of = {unit: i for i, layer in enumerate(layers) for unit in layer}
    problems = [f"import cycle between modules: {' -> '.join(c)}" for c in find_cycles(edges)]
    units = {(unit_of(a, package_dir), unit_of(b, package_dir)) for a, b in edges}
    problems += [f"import cycle between packages/files: {' -> '.join(c)}" for c in find_cycles(
        (a, b) for a, b in units if a != b)]
    for unit in sorted({unit_of(m, package_dir) for m in modules_of(package_dir)} - set(layer_of)):
        problems.append(f"{package_dir.name}/{unit} is in no layer of {DESIGN.name} §11; add it to the table")
    for a, b in sorted(edges):
        ua, ub = unit_of(a, package_dir), unit_of(b, package_dir)
        if ua in layer_of and ub in layer_of and layer_of[ub] < layer_of[ua]:
            problems.append(f"{a} -> {b} points up: {ub} (layer {layer_of[ub] + 1}: "
                            f"{', '.join(layers[layer_of[ub]])}) is above {ua} (layer {layer_of[ua] + 1})")
    return problems


def test_the_layer_table_is_in_the_design_doc():
    layers = read_layers(DESIGN.read_text(encoding="utf-8"))
    assert len(layers) >= 5 and "tasks/" in {u for layer in layers for u in layer}
    assert layers[0][0] == "cli.py" and "errors.py" in layers[-1]


def test_imports_point_down_the_layers_and_form_no_cycle():
    problems = check(PACKAGE, read_layers(DESIGN.read_text(encoding="utf-8")), ALLOWED)
    assert not problems, "\n".join(problems)


def test_the_allow_list_only_shrinks():
    edges = {f"{a} -> {b}" for a, b in import_edges(PACKAGE)}
    stale = sorted(set(ALLOWED) - edges)
    assert not stale, f"these allowed edges are gone; delete them from ALLOWED: {stale}"


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "__init__.py").write_text("", encoding="utf-8")
    (fake / "high.py").write_text("import fake.low\n", encoding="utf-8")
    (fake / "low.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from fake.high import Thing\n", encoding="utf-8")
    layers = [["high.py"], ["low.py"], ["__init__.py"]]
    assert import_edges(fake) == {("fake.high", "fake.low")}  # the TYPE_CHECKING import does not count
    assert check(fake, layers) == []
    (fake / "low.py").write_text("def later():\n    from . import high\n    return high\n", encoding="utf-8")
    assert import_edges(fake) == {("fake.high", "fake.low"), ("fake.low", "fake.high")}  # lazy and relative
    problems = check(fake, layers)
    assert problems == [
        "import cycle between modules: fake.high -> fake.low -> fake.high",
        "import cycle between packages/files: high.py -> low.py -> high.py",
        "fake.low -> fake.high points up: high.py (layer 1: high.py) is above low.py (layer 2)",
    ]
    assert check(fake, layers, allowed=["fake.low -> fake.high"]) == []
    with pytest.raises(AssertionError, match="no heading"):
        read_layers("# no layers here\n")
