"""The import graph has no cycle between packages and no upward arrow.

Layers, bottom to top: the library (``fetalflex``), then ``export`` and ``service`` (which
use the library), then ``bench`` (which may use everything, and nothing uses). Every
``import`` statement counts, also inside functions and under ``TYPE_CHECKING``.

The graph's nodes are packages: each subpackage of ``fetalflex`` (``fetalflex.anatomy``,
...) and each of its top-level modules (``fetalflex.generation``, ...), the package root
``fetalflex`` (the ``FetalFlex`` facade), ``service``, ``export`` and ``bench``. The one
permitted upward arrow is the ``fetalflex`` command (the ``fetalflex.cli`` package, one node
with its per-command modules), the entry point: inside its functions, lazily, it dispatches to
the service, the exporters and the benchmarks, and hands ``fetalflex dataset run --target``
the service's item maker (``service.dataset_remote``); no other library module imports them,
not even lazily.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ("fetalflex", "service", "export", "bench")
ABOVE_LIBRARY = ("service", "export", "bench")
ENTRY_POINT = "fetalflex.cli"


def _modules() -> dict[str, Path]:
    out = {}
    for top in TOP:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for each import of a project module."""
    tree = ast.parse(path.read_text(), str(path))
    in_function: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(fn))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from a.b import c``: the module a.b.c when there is one, else a.b
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                     else node.module for a in node.names]
        else:
            continue
        out += [(n, id(node) in in_function) for n in names if n.split(".")[0] in TOP]
    return out


def _node(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "fetalflex" else parts[0]


EDGES = [(m, target, lazy) for m, path in MODULES.items() for target, lazy in _imports(path)]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read() -> None:
    assert {"fetalflex.generation", "service.servicer", "export.triton_repository",
            "bench.cli"} <= set(MODULES)
    nodes = {_node(m) for m in MODULES}
    assert {"fetalflex.anatomy", "fetalflex.request", "service", "bench"} <= nodes
    assert ("fetalflex.generation", "fetalflex.request", False) in EDGES
    assert ("service.translate", "fetalflex.request", False) in EDGES
    # the check sees lazy imports too
    assert ("fetalflex.cli.serve", "service.server", True) in EDGES
    # `fetalflex dataset run --target` gets the service's maker through the entry point
    assert ("fetalflex.cli.args", "service.dataset_remote", True) in EDGES
    # the command modules are the entry point's node
    assert _node("fetalflex.cli.serve") == _node("fetalflex.cli") == ENTRY_POINT


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _lazy in EDGES:
        if _node(a) != _node(b):
            graph[_node(a)].add(_node(b))
    assert _cycles(graph) == []
    # the helper finds a cycle when there is one
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _upward(edges: list[tuple[str, str, bool]]) -> set[tuple[str, str]]:
    """Library imports of anything above the library, but for the entry point's lazy ones
    (those of any module of the ``fetalflex.cli`` package)."""
    return {(a, b) for a, b, lazy in edges
            if a.split(".")[0] == "fetalflex" and b.split(".")[0] in ABOVE_LIBRARY
            and not (_node(a) == ENTRY_POINT and lazy)}


def test_the_library_imports_nothing_above_it() -> None:
    assert _upward(EDGES) == set()
    # the check finds an upward arrow when there is one, lazy or not, and exempts only the
    # entry point's lazy dispatch, from any module of the package (the dataset command's own
    # module and fetalflex.cli_common are no entry point)
    assert _upward([*EDGES, ("fetalflex.dataset.makers", "service.client", True),
                    ("fetalflex.dataset.writer", "service.outputs", False),
                    ("fetalflex.dataset.cli", "service.dataset_remote", True),
                    ("fetalflex.cli_common", "service.client", True),
                    ("fetalflex.cli", "bench.cli", False),
                    ("fetalflex.cli.load", "service.client", False),
                    ("fetalflex.cli.export", "export.onnx_export", True)]) == {
        ("fetalflex.dataset.makers", "service.client"),
        ("fetalflex.dataset.writer", "service.outputs"),
        ("fetalflex.dataset.cli", "service.dataset_remote"),
        ("fetalflex.cli_common", "service.client"),
        ("fetalflex.cli", "bench.cli"),
        ("fetalflex.cli.load", "service.client")}



def test_an_added_upward_import_is_found(tmp_path: Path) -> None:
    """A library module that imported the service, even inside a function or under
    TYPE_CHECKING, would fail the test above."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from service.api_enums import SAMPLER_ENUM\n"
                   "def f():\n    from service.client import channel\n    import bench.cli\n")
    edges = [("fetalflex.dataset.writer", b, lazy) for b, lazy in _imports(src)]
    assert edges == [("fetalflex.dataset.writer", "service.api_enums", False),
                     ("fetalflex.dataset.writer", "service.client", True),
                     ("fetalflex.dataset.writer", "bench.cli", True)]
    assert _upward(edges) == {("fetalflex.dataset.writer", b) for b in
                              ("service.api_enums", "service.client", "bench.cli")}


def test_nothing_imports_the_benchmarks() -> None:
    users = {a for a, b, lazy in EDGES
             if b.split(".")[0] == "bench" and a.split(".")[0] != "bench"
             and not (a == ENTRY_POINT and lazy)}
    assert users == set()


def test_the_library_reads_its_constants_from_a_leaf() -> None:
    """The package root holds the ``FetalFlex`` facade (it imports the library), so no
    library module imports the root; ``fetalflex.about`` holds the version and notice."""
    assert [a for a, b, _ in EDGES if b == "fetalflex" and a != "fetalflex"] == []
