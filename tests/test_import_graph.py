"""sslray's import graph: no circle, no import from a lower layer up to a higher one.

The graph is read from the source (``ast``), every ``import`` and ``from ... import`` counted --
those at module level and those inside functions alike (a function-level import is still a
dependency; deferring it only hides a circle until the function runs). ``from sslray.pkg import
name`` counts as an import of ``sslray.pkg.name`` when that is a module, else of ``sslray.pkg``.
That importing ``sslray.pkg.mod`` first runs ``sslray/pkg/__init__.py`` is not counted: it is how
packages work, not a dependency the code chose; nor is an import under ``if TYPE_CHECKING:`` (it
never runs: annotations only).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The layers, lowest first; a module may import only from its own layer or lower ones. A module's
# layer is that of the longest prefix listed here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # the config schema (dataclasses every layer reads), the CLI helpers, plain statistics
    ("base", ("sslray.config", "sslray.cli", "sslray.stats")),
    # every MLflow call and tag name: a service that imports nothing else from sslray
    ("tracking", ("sslray.tracking",)),
    ("data", ("sslray.data",)),
    ("views", ("sslray.views", "sslray.views_ops", "sslray.views_params", "sslray.views_resample")),
    # the metric functions the loop's online evaluation and the evaluation of a checkpoint share
    # (kNN, linear probe, collapse statistics, feature extraction): a library under the loop
    ("metrics", ("sslray.eval.collapse", "sslray.eval.features", "sslray.eval.knn", "sslray.eval.probe",
                 "sslray.eval")),
    ("models", ("sslray.models",)),
    ("losses", ("sslray.losses",)),
    ("methods", ("sslray.methods", "sslray.rules")),  # rules: the config checks that need the registries
    ("loop", ("sslray.loop", "sslray.local_run", "sslray.optim", "sslray.parallel", "sslray.checkpoint", "sslray.rundir",
              "sslray.resources", "sslray.ray_train")),
    # evaluating and distilling a trained checkpoint
    ("eval", ("sslray.eval.offline", "sslray.distill")),
    ("search/compare", ("sslray.search", "sslray.compare")),
    # experiment tracking, reports, the command modules (and the package's own load_encoder)
    ("report/commands", ("sslray.distill.tracking", "sslray.report", "sslray.train",
                                  "sslray.tune", "sslray.eval.__main__", "sslray.distill.__main__",
                                  "sslray.compare.__main__", "sslray.report.__main__", "sslray")),
]

# Upward imports tolerated, as (importer, imported): none. The config rules that need registries
# live in sslray.rules (above the methods) and register with sslray.config.rule.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted((ROOT / "sslray").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _owner(name: str, mods: dict[str, Path]) -> str | None:
    """The module ``name`` lives in: itself, or the longest listed prefix (a class or function)."""
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in mods else None


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The import nodes under ``if TYPE_CHECKING:``: annotations only, never run."""
    return {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING" for stmt in node.body for n in ast.walk(stmt)}


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names)
    owners = {_owner(m, mods) for m in found if m == "sslray" or m.startswith("sslray.")}
    return {m for m in owners if m is not None and m != name}


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, deps in graph.items() for b in deps if layer_of(b) > layer_of(a)}


def test_the_graph_sees_module_and_function_level_imports():
    graph = import_graph()
    assert "sslray.methods.base" in graph["sslray.methods.joint"]  # module level
    assert "sslray.models" in graph["sslray.methods"]  # inside build_method
    assert "sslray.losses.params" in graph["sslray.losses"]  # from a package's __init__


def test_no_circle():
    assert cycles(import_graph()) == []


def test_cycles_finds_a_circle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_models_imports_nothing_from_sslray():
    assert import_graph()["sslray.models"] == set()


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_upward_import_beyond_the_known_ones():
    upward = upward_imports(import_graph())
    new = sorted(upward - KNOWN_UPWARD)
    assert not new, "imports from a lower layer up to a higher one: " + ", ".join(f"{a} -> {b}" for a, b in new)


def test_the_methods_and_losses_import_nothing_above_them():
    graph = import_graph()
    methods = layer_of("sslray.methods")
    for module, deps in graph.items():
        if module.startswith(("sslray.losses", "sslray.methods", "sslray.models")):
            assert all(layer_of(d) <= methods for d in deps), (module, deps)
