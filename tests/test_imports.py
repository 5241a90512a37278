"""The package's import graph has no cycle, deferred (function-level) imports included: a deferred import
may keep a heavy library off the start-up path, never hide a cycle."""
import ast

import networkx as nx

from .conftest import REPO

PKG = REPO / "naskd"


def _modules() -> dict:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _targets(mods: dict, here: str, node) -> list[str]:
    """The package modules an import statement in module ``here`` names."""
    package = here if mods[here].name == "__init__.py" else here.rsplit(".", 1)[0]
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(up + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    out = []
    for t in names:
        while t not in mods and "." in t:
            t = t.rsplit(".", 1)[0]
        if t in mods and t != here:
            out.append(t)
    return out


def import_graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    for name, path in mods.items():
        g.add_node(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(mods, name, node):
                    # a module importing its own package's __init__ (registries, re-exports) is not a cycle
                    if not name.startswith(t + "."):
                        g.add_edge(name, t)
    return g


def test_walker_sees_deferred_imports():
    g = import_graph()
    assert g.has_edge("naskd.cli", "naskd.evaluation")          # imported inside a command function
    assert g.has_edge("naskd.pipeline", "naskd.data.encode")     # and at the top


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles)
