"""The package-level import graph of ``recsys`` has no cycle (no JVM: source files are parsed, not imported).

A unit is a subpackage (``recsys.serve``) or a top-level module (``recsys.publish``). Every import counts, at module
level, inside a function or under ``TYPE_CHECKING``, and so do the names a package exports lazily
(``lazy_exports``): a back edge imported late is still a back edge. A package's ``settings`` module is a unit of its
own: it is that package's section of the configuration, which ``recsys.config`` assembles from every package while
the packages take the assembled ``Settings``. Lower layers (``ids``, ``serve``) must not reach up into the packages
that call them (``catalog``, ``monitor``), so each can be read and tested on its own.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = "recsys"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
CORE = frozenset({"recsys.serve", "recsys.catalog", "recsys.monitor", "recsys.models", "recsys.evaluate"})
# Back edges known and not removed yet, each closing a cycle outside CORE; the second test fails once one is gone,
# so the list only shrinks. The deletion cascade (catalog.apply) re-runs silver, quality and publish although
# silver and ingest consult catalog's guard; lock types its arguments with config, which holds lock's settings.
PENDING: frozenset[tuple[str, str]] = frozenset({
    ("recsys.catalog", "recsys.publish"), ("recsys.catalog", "recsys.quality"), ("recsys.catalog", "recsys.silver"),
    ("recsys.lock", "recsys.config"),
})

Edge = tuple[str, str]               # (importing unit, imported unit)
Where = list[str]                    # "recsys/serve/app.py:27" of every import making an edge


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str | None:
    """``recsys.serve.app`` -> ``recsys.serve``, ``recsys.serve.settings`` itself; ``None`` for the root package
    and modules outside ``recsys``."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return module if parts[2:] == ["settings"] else ".".join(parts[:2])


def same_package(a: str, b: str) -> bool:
    """Inside one package (its settings module included) any import is fine."""
    return a.split(".")[:2] == b.split(".")[:2]


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Every module ``tree`` imports (``from a import b`` names ``a.b`` too: ``b`` may be a submodule), with its
    line; the string values of a ``lazy_exports(..., {name: module})`` call count as imports."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports":
            for arg in node.args:
                if isinstance(arg, ast.Dict):
                    found += [(value.value, value.lineno) for value in arg.values
                              if isinstance(value, ast.Constant) and isinstance(value.value, str)]
    return found


def import_graph() -> dict[Edge, Where]:
    """Edges between distinct units, each with where it is made."""
    known = {module_name(path) for path in ROOT.rglob("*.py")}
    edges: dict[Edge, Where] = defaultdict(list)
    for path in sorted(ROOT.rglob("*.py")):
        module = module_name(path)
        source = unit(module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, line in imported_modules(tree, module, path.name == "__init__.py"):
            target_unit = unit(target) if target in known else None
            if not source or not target_unit or same_package(source, target_unit):
                continue
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if where not in edges[source, target_unit]:            # "from a import b" names a and a.b
                edges[source, target_unit].append(where)
    return edges


def find_cycle(edges: dict[Edge, Where]) -> list[str] | None:
    """One cycle of units (first unit repeated at the end), or ``None``; depth-first, in sorted order."""
    successors: dict[str, list[str]] = defaultdict(list)
    for source, target in sorted(edges):
        successors[source].append(target)
    state: dict[str, str] = {}                     # "open" while on the stack, "done" after
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in successors[node]:
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(successors):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_imports_are_found_at_any_level_relative_and_lazy():
    source = """
import recsys.ids
from . import events
from ..catalog.files import scrub_event_logs
def later():
    from recsys.models import factors
__getattr__, __all__ = lazy_exports(__name__, {"create_app": "recsys.serve.app"})
"""
    found = {name for name, _ in imported_modules(ast.parse(source), "recsys.serve.store", is_package=False)}
    assert {"recsys.ids", "recsys.serve.events", "recsys.catalog.files", "recsys.models.factors",
            "recsys.serve.app"} <= found
    assert unit("recsys.serve.app") == "recsys.serve" and unit("recsys.serve.settings") == "recsys.serve.settings"


def test_cycle_search_names_the_cycle():
    edges = {("recsys.a", "recsys.b"): ["x"], ("recsys.b", "recsys.c"): ["y"], ("recsys.c", "recsys.a"): ["z"],
             ("recsys.c", "recsys.d"): ["w"]}
    assert find_cycle(edges) == ["recsys.a", "recsys.b", "recsys.c", "recsys.a"]
    assert find_cycle({k: v for k, v in edges.items() if k != ("recsys.c", "recsys.a")}) is None


def test_packages_import_each_other_one_way_only():
    edges = {edge: where for edge, where in import_graph().items() if edge not in PENDING}
    cycle = find_cycle(edges)
    if cycle:
        steps = [f"  {a} -> {b}: {', '.join(edges[a, b])}" for a, b in zip(cycle, cycle[1:])]
        raise AssertionError("import cycle between packages:\n" + "\n".join(steps))


def test_pending_back_edges_still_exist_and_none_is_between_core_packages():
    edges = import_graph()
    gone = sorted(edge for edge in PENDING if edge not in edges)
    assert not gone, f"these back edges are gone: remove them from PENDING: {gone}"
    assert not [edge for edge in PENDING if set(edge) <= CORE]


# The API and the weights it serves GRU4Rec with run without PyTorch (only training needs it: importing it costs a
# second and hundreds of MB in every gunicorn worker): nothing they import, directly or through other recsys modules,
# at any level, may be torch.
TORCH_FREE = ("recsys.serve", "recsys.sessions.gru4rec.weights")


def module_imports() -> dict[str, set[str]]:
    """Each recsys module -> the modules importing it runs: the recsys ones (a name inside a module resolved to
    that module, packages' ``__init__`` included) and the top-level name of every other."""
    known = {module_name(path): path for path in ROOT.rglob("*.py")}

    def resolved(name: str) -> set[str]:
        parts = name.split(".")
        if parts[0] != PACKAGE:
            return {parts[0]}
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return {prefix for prefix in prefixes if prefix in known}       # importing a.b.c runs a, a.b and a.b.c

    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = imported_modules(tree, module, path.name == "__init__.py")
        graph[module] = set().union(*(resolved(name) for name, _ in found)) - {module}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module importing ``start`` runs: its own imports, its parent packages' and theirs, transitively."""
    parts = start.split(".")
    todo = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    seen = set(todo)
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_module_reach_follows_recsys_modules_to_outside_imports():
    graph = {"recsys.serve.app": {"recsys.models", "flask"}, "recsys.models": {"recsys.models.x"},
             "recsys.models.x": {"torch"}}
    assert reachable(graph, "recsys.serve.app") == {"recsys", "recsys.serve", "recsys.serve.app", "recsys.models",
                                                    "recsys.models.x", "flask", "torch"}
    assert "torch" in reachable({"recsys.sessions": {"torch"}}, "recsys.sessions.gru4rec.weights")


def test_the_api_and_the_gru4rec_weights_never_import_torch():
    graph = module_imports()
    starts = [module for module in graph if any(module == top or module.startswith(f"{top}.") for top in TORCH_FREE)]
    assert "recsys.sessions.gru4rec.weights" in starts and "recsys.serve.app" in starts
    offenders = {start: sorted(m for m in reachable(graph, start) if m.startswith("recsys.") and "torch" in
                               graph[m]) for start in starts if "torch" in reachable(graph, start)}
    assert not offenders, f"these import torch (through the modules listed): {offenders}"
